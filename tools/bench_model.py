"""Benchmark the model core on this machine (random weights; timings only).

(a) ``mammut-video-B-16`` encoder: sparse tubes (one ViT pass per clip) vs. encoding every frame
    separately through the same ViT, at 8 / 16 / 32 frames of 224x224.
(b) caption generation, ms per generated token (per step of the whole batch), for 8 / 32 / 64 new
    tokens, batches of 1 and 4 clips (greedy, EOS disabled so every run produces exactly that many
    tokens), three ways:

    - cache: self-attention K/V grow one token per step, cross-attention K/V computed once per clip
      (``generate(use_cache=True)``);
    - no cache: no key/value cache at all, as open_clip's CoCa/MaMMUT ``generate``:
      every step re-runs the decoder on the whole prefix and recomputes the cross-attention K/V from
      the visual tokens (:func:`generate_without_cache`, checked to give the same tokens);
    - prefix re-run: the whole prefix every step, but cross-attention K/V computed once
      (``generate(use_cache=False)``), to show what each half of the cache is worth.

Usage: ``python tools/bench_model.py [--repeats 5] [--gen-repeats 3] [--frames 8 16 32] [--new-tokens 8 32 64]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

import mammut_video  # noqa: F401  (torchvision guard before timm)
from mammut_video.model import create_model
from mammut_video.model.generation import generate


def median_ms(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, float]]:
    """(median, fastest) wall time in ms of each function; runs are interleaved so that load from
    other processes on a shared machine hits all of them alike (the fastest run is the least disturbed)."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
    return [(statistics.median(t), min(t)) for t in times]


@torch.no_grad()
def generate_without_cache(model, tokens: torch.Tensor, sot: int, n: int) -> list[list[int]]:
    """Greedy decoding with no key/value cache of any kind (open_clip's ``generate``): each step
    maps the visual tokens (B, N, Dv) to cross-attention K/V again and re-runs the whole prefix."""
    ids = torch.full((tokens.shape[0], 1), sot, dtype=torch.long)
    for _ in range(n):
        logits, _ = model.text.forward_generative(ids, model.cross_kv(tokens))
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, 1:].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per encoder measurement")
    parser.add_argument("--gen-repeats", type=int, default=3, help="timed runs per generation measurement")
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--gen-batch", type=int, nargs="+", default=[1, 4], help="clips decoded together")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model("mammut-video-B-16").eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model mammut-video-B-16, "
          f"float32, median of {args.repeats} interleaved runs")

    print("\n(a) encoder, one 224x224 clip")
    print(f"{'frames':>6} | {'tube tokens':>11} | {'tube ms':>8} | {'per-frame tokens':>16} | {'per-frame ms':>12} "
          f"| {'speed-up':>8} | {'fastest-run speed-up':>20}")
    with torch.inference_mode():
        for t in args.frames:
            clip = torch.randn(1, 3, t, 224, 224)
            n_tube = model.visual.forward_tokens(clip).shape[1]
            n_frame = model.visual.forward_per_frame(clip).shape[1]
            (tube_ms, tube_min), (frame_ms, frame_min) = median_ms(
                [lambda: model.visual.forward_tokens(clip), lambda: model.visual.forward_per_frame(clip)], args.repeats)
            print(f"{t:>6} | {n_tube:>11} | {tube_ms:>8.1f} | {n_frame:>16} | {frame_ms:>12.1f} "
                  f"| {frame_ms / tube_ms:>7.1f}x | {frame_min / tube_min:>19.1f}x")

        print("\n(b) generation (greedy, 32-frame clips' 540 visual tokens each, 12-layer width-768 decoder),"
              " ms per generated token; speed-ups: median (fastest run)")
        print(f"{'batch':>5} | {'new tokens':>10} | {'cache':>7} | {'no cache':>8} | {'prefix re-run':>13} "
              f"| {'cache vs no cache':>17} | {'cache vs prefix re-run':>22}")
        for batch in args.gen_batch:
            tokens = model.visual.forward_tokens(torch.randn(batch, 3, 32, 224, 224))
            sot = [[49406] for _ in range(batch)]
            for n in args.new_tokens:
                def cached() -> list[list[int]]:
                    out = generate(model.text, model.cross_kv(tokens), sot, eos_id=-1, max_new_tokens=n)
                    assert all(len(row) == n for row in out)
                    return out

                def prefix_rerun() -> list[list[int]]:
                    return generate(model.text, model.cross_kv(tokens), sot, eos_id=-1, max_new_tokens=n,
                                    use_cache=False)

                assert cached() == generate_without_cache(model, tokens, 49406, n) == prefix_rerun()
                (c, c_min), (u, u_min), (p, p_min) = median_ms(
                    [cached, lambda: generate_without_cache(model, tokens, 49406, n), prefix_rerun],
                    args.gen_repeats)
                print(f"{batch:>5} | {n:>10} | {c / n:>7.1f} | {u / n:>8.1f} | {p / n:>13.1f} "
                      f"| {u / c:>5.1f}x ({u_min / c_min:>4.1f}x) | {p / c:>10.1f}x ({p_min / c_min:>4.1f}x)")


if __name__ == "__main__":
    main()
