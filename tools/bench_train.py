#!/usr/bin/env python
"""Training speed and memory: samples/s and peak memory of one optimizer step, per configuration.

    python tools/bench_train.py [--presets tiny,B-16] [--steps 3] [--device cpu|cuda] [--out table.json]

For each preset (tiny: 8 frames, batch 32; B-16: 32 frames, batch 8) it times the finetune step
(forward with vocabulary logits at the answer positions only, token loss, backward, AdamW with
its parameter groups) on random clips and QA batches, in these configurations: fp32 and bf16
autocast; with and without gradient checkpointing; the vision encoder frozen vs everything
trained. Each configuration runs in a fresh process, so its peak resident memory (and, on CUDA,
its peak allocated GPU memory) is its own. The first step is a warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

PRESETS = {"tiny": ("mammut-video-tiny", 8, 32), "B-16": ("mammut-video-B-16", 32, 8)}
CONFIGS = [  # (precision, gradient checkpointing, frozen parts)
    ("fp32", False, ""), ("bf16", False, ""), ("fp32", True, ""), ("fp32", False, "vision"),
]


def one(preset: str, frames: int, batch: int, precision: str, checkpointing: bool, freeze: str, steps: int,
        device: str) -> dict:
    """Run ``steps`` + 1 training steps of one configuration in this process; returns its numbers."""
    import torch

    import mammut_video as mv
    from mammut_video.runtime.precision import autocast
    from mammut_video.train.data import trim_to_longest
    from mammut_video.train.optim import build_optimizer

    torch.manual_seed(0)
    dev = torch.device(device)
    model = mv.create_model(preset, num_frames=frames)
    if freeze:
        model.lock(**{freeze: True})
    for _, p in model.unused_parameters(frames, contrastive=False):
        p.requires_grad_(False)
    model.set_grad_checkpointing(checkpointing)
    model.to(dev).train()
    optimizer = build_optimizer(model, 1e-4, 0.05)
    size = model.config.vision.image_size
    video = torch.randn(batch, 3, frames, size, size, device=dev)
    questions = ["what color is the square that moves left?"] * batch
    ids, labels = trim_to_longest(*mv.build_qa_batch(model.tokenizer, questions, ["red"] * batch,
                                                     model.config.text.context_length))
    ids, labels = ids.to(dev), labels.to(dev)

    def step() -> None:
        with autocast(dev, precision):
            out = model(video, ids, labels, contrastive=False)
            loss = mv.caption_loss(out["logits"], out["targets"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocator, autotuning, lazy inits
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    result = {"preset": preset, "frames": frames, "batch": batch, "precision": precision,
              "grad_checkpointing": checkpointing, "frozen": freeze or "none", "s_per_step": round(seconds, 3),
              "samples_per_s": round(batch / seconds, 2),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if dev.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return result


def table(rows: list[dict]) -> str:
    cuda = any("peak_cuda_mb" in r for r in rows)
    head = ["preset", "frames", "batch", "precision", "grad ckpt", "frozen", "s/step", "samples/s", "peak RSS MB"]
    head += ["peak CUDA MB"] if cuda else []
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        cells = [r["preset"], r["frames"], r["batch"], r["precision"], "on" if r["grad_checkpointing"] else "off",
                 r["frozen"], r["s_per_step"], r["samples_per_s"], r["peak_rss_mb"]]
        cells += [r.get("peak_cuda_mb", "")] if cuda else []
        lines.append(" | ".join(map(str, cells)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--presets", default="tiny,B-16", help=f"comma list of {', '.join(PRESETS)}")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (after one warm-up)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, help="override every preset's batch size (short runs)")
    parser.add_argument("--frames", type=int, help="override every preset's frame count (short runs)")
    parser.add_argument("--out", help="also write the rows as JSON to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one configuration, as JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(**json.loads(args.one))))
        return 0
    rows = []
    for key in args.presets.split(","):
        preset, frames, batch = PRESETS[key]
        for precision, checkpointing, freeze in CONFIGS:
            spec = {"preset": preset, "frames": args.frames or frames, "batch": args.batch or batch,
                    "precision": precision, "checkpointing": checkpointing, "freeze": freeze, "steps": args.steps,
                    "device": args.device}
            done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{spec}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
