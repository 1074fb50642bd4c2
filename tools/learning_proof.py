#!/usr/bin/env python
"""The learning proof: `mammut-video-tiny` from random weights learns the synthetic moving-shapes QA set.

Runs the README's commands, each printed before it runs, then scores the test split per question kind:

    mammut-video finetune --train D/train.jsonl --val D/val.jsonl --video-root D --out W/run-T8 \\
        --preset mammut-video-tiny --max-time 10m
    mammut-video eval custom-qa --annotations D/test.jsonl --videos D --checkpoint W/run-T8/best --out W/eval-T8

and the same recipe with one frame (``--frames 1``: the image tube only, no motion can be seen). The
finetune runs use the recipe's defaults: nothing is tuned on the test split (the best checkpoint is
picked on the validation split).

Writes ``W/learning_proof.json`` and, with ``--docs``, ``docs/learning_proof.json`` (read by
``tools/bench.py``) and the runs' ``curves.png`` as ``docs/learning_proof_T8.png`` / ``_T1.png``.

    python tools/learning_proof.py [--work learning_proof] [--max-time 10m] [--runs T8 T1] [--docs]

Run it on a quiet machine: the runs are bounded by time, so another busy process costs steps.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import machine_label, torch_version  # tools/bench.py: one description of the machine

ROOT = Path(__file__).resolve().parent.parent
# question prefix -> kind, as mammut_video.data.synthetic.questions writes them
KINDS = {"how many": "count", "what color": "colour", "what shape": "shape", "where does": "direction",
         "what moves first": "first"}
RUNS = {"T8": [], "T1": ["--frames", "1"]}


def question_kind(question: str) -> str:
    """The synthetic set's question kind from its wording (the eval's own report groups by first word)."""
    for prefix, kind in KINDS.items():
        if question.lower().startswith(prefix):
            return kind
    raise ValueError(f"not a synthetic moving-shapes question: {question!r}")


def per_kind(predictions: Path) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Accuracy (%) per kind and overall from eval's predictions.jsonl; the majority-answer baseline
    per kind (always answering the kind's most common test answer: what "chance" means here); counts."""
    from mammut_video.eval.qa_metrics import most_common_answer_accuracy

    correct: Counter = Counter()
    total: Counter = Counter()
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    for rec in records:
        kind = question_kind(rec["question"])
        total[kind] += 1
        correct[kind] += bool(rec["correct"])
    acc = {k: 100.0 * correct[k] / total[k] for k in KINDS.values() if total[k]}
    acc["all"] = 100.0 * sum(correct.values()) / sum(total.values())
    base = most_common_answer_accuracy((question_kind(r["question"]), r["answer"]) for r in records)
    return acc, base, dict(total)


def trained_minutes(run_dir: Path) -> float:
    """The run's own clock (training and its validations, what --max-time bounds), from train_state.pt."""
    import torch

    state = torch.load(run_dir / "train_state.pt", map_location="cpu", weights_only=False)
    return float(state["position"]["elapsed"]) / 60


def run(argv: list[str]) -> None:
    """Print the command as a user would type it, then run it (the installed console script)."""
    print("$ " + shlex.join(argv), flush=True)
    exe = shutil.which("mammut-video") or shutil.which("mammut-video", path=str(Path(sys.executable).parent))
    code = subprocess.call([exe or "mammut-video", *argv[1:]])
    if code != 0:
        raise SystemExit(f"{argv[0]} {argv[1]} exited with {code}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("learning_proof"), help="data and runs go here "
                   "(default: ./learning_proof)")
    p.add_argument("--num-videos", type=int, default=1000, help="synthetic videos, split 60/15/25 "
                   "train/val/test (default: 1000: 600 training clips)")
    p.add_argument("--max-time", default="10m", help="each run's training time budget (default: 10m)")
    p.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=["T8", "T1"],
                   help="T8: the recipe as it is (8 frames); T1: the same with --frames 1 (default: both)")
    p.add_argument("--reuse", action="store_true", help="keep runs and evaluations already in --work")
    p.add_argument("--docs", action="store_true", help="also write docs/learning_proof.json and the curves")
    args = p.parse_args()

    from mammut_video.data import make_synthetic

    data = args.work / "data" / "custom"
    if not (data / "test.jsonl").is_file():
        print(f"writing {args.num_videos} synthetic videos to {data}", flush=True)
        make_synthetic(args.work / "data", kind="custom", num_videos=args.num_videos, seed=0)
    results = []
    for name in args.runs:
        out, ev = args.work / f"run-{name}", args.work / f"eval-{name}"
        if not (args.reuse and (out / "best").is_dir()):
            run(["mammut-video", "finetune", "--train", str(data / "train.jsonl"), "--val", str(data / "val.jsonl"),
                 "--video-root", str(data), "--out", str(out), "--preset", "mammut-video-tiny",
                 "--max-time", args.max_time, *RUNS[name], "--overwrite"])
        if not (args.reuse and (ev / "metrics.json").is_file()):
            run(["mammut-video", "eval", "custom-qa", "--annotations", str(data / "test.jsonl"), "--videos", str(data),
                 "--checkpoint", str(out / "best"), "--out", str(ev), "--overwrite"])
        acc, base, counts = per_kind(ev / "predictions.jsonl")
        train = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        steps = max((r["step"] for r in train if r.get("kind") == "train"), default=0)
        command = (f"mammut-video finetune --train D/train.jsonl --val D/val.jsonl --video-root D --out RUN "
                   f"--preset mammut-video-tiny --max-time {args.max_time}" + "".join(f" {a}" for a in RUNS[name]))
        results.append({"name": name, "command": command, "minutes": trained_minutes(out), "steps": steps,
                        "accuracy": acc, "majority_baseline": base, "questions": counts,
                        "curves": str(out / "curves.png")})
    report = {"machine": machine_label("cpu"), "date": time.strftime("%Y-%m-%d"), "torch": torch_version(),
              "data": f"make_synthetic(kind='custom', num_videos={args.num_videos}, seed=0)", "runs": results}
    (args.work / "learning_proof.json").write_text(json.dumps(report, indent=1) + "\n")
    kinds = [*KINDS.values(), "all"]
    print("\n| run | steps | " + " | ".join(kinds) + " |\n|---|---|" + "---|" * len(kinds))
    for r in results:
        print(f"| {r['name']} | {r['steps']} | " + " | ".join(f"{r['accuracy'].get(k, float('nan')):.1f}"
                                                       for k in kinds) + " |")
    if results:
        print("| majority answer | - | " + " | ".join(f"{results[0]['majority_baseline'].get(k, float('nan')):.1f}"
                                                      for k in kinds[:-1]) + " | - |")
    if args.docs:
        (ROOT / "docs" / "learning_proof.json").write_text(json.dumps(report, indent=1) + "\n")
        from mammut_video.train.curves import draw_curves

        for r in results:  # redrawn from the run's metrics.jsonl (the same picture as its curves.png)
            records = [json.loads(x) for x in (args.work / f"run-{r['name']}" / "metrics.jsonl").read_text().splitlines()]
            draw_curves(records, ROOT / "docs" / f"learning_proof_{r['name']}.png", "val_accuracy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
