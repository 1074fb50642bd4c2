#!/usr/bin/env python
"""`make demo`: the project's main job, end to end, with a model that learns, on data made here.

Every step is the command a user would type, printed before it runs (run in this process):

1. a synthetic MSRVTT-QA-format dataset (moving shapes; the exact MSRVTT files and layout);
2. ``mammut-video finetune`` ``mammut-video-tiny`` from random weights on its QA train split (time-boxed);
3. ``mammut-video eval msrvtt-qa`` on its test split: accuracy per question type, with chance beside it;
4. ``mammut-video caption`` and ``mammut-video ask`` on a test clip (a second short run learns
   captions and the contrastive embedding from the caption split);
5. ``mammut-video embed`` the demo videos and ``mammut-video search`` with a text query -> search.html;
6. a summary of where everything is.

A second ``make demo`` reuses the dataset and finished runs (it says so); ``--fresh`` starts over.
Swap in real data by pointing the same commands at an MSRVTT folder and a converted checkpoint
(README: "A short tour").
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from mammut_video.commands import main as cli


def say(text: str) -> None:
    print(text, flush=True)


def command(argv: list[str]) -> None:
    """Print the command line as typed, then run it; a failure stops the demo with its exit code."""
    say("$ mammut-video " + shlex.join(argv))
    code = cli(argv)
    if code != 0:
        raise SystemExit(code)


def make_data(root: Path, num_videos: int) -> Path:
    """The synthetic MSRVTT dataset under ``root`` (reused when it was made with the same size)."""
    from mammut_video.data import make_synthetic

    marker = root / "demo-data.json"
    wanted = {"kind": "msrvtt", "num_videos": num_videos, "seed": 0}
    data = root / "msrvtt"
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        say(f"reusing the synthetic dataset in {data} (delete it, or run with --fresh, to write it again)")
        return data
    shutil.rmtree(root, ignore_errors=True)
    say(f"writing {num_videos} synthetic videos with MSRVTT-QA questions and MSRVTT captions to {data}")
    make_synthetic(root, kind="msrvtt", num_videos=num_videos, seed=0)
    marker.write_text(json.dumps(wanted))
    return data


def train(run_dir: Path, argv: list[str]) -> None:
    """``mammut-video finetune`` into ``run_dir``, or reuse it when a finished run with the same command is there."""
    marker = run_dir / "demo-command.json"
    if marker.is_file() and json.loads(marker.read_text()) == argv and (run_dir / "best").is_dir():
        say(f"reusing the finished run in {run_dir} (same command; --fresh trains again)")
        return
    command([*argv, "--overwrite"] if run_dir.exists() else argv)
    marker.write_text(json.dumps(argv))


def chance(eval_dir: Path) -> dict[str, float]:
    """Per question type, the accuracy of always giving that type's most common test answer."""
    from mammut_video.eval.qa_metrics import most_common_answer_accuracy

    records = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines()]
    return most_common_answer_accuracy((r["question_type"], r["answer"]) for r in records)


def search_check(index: Path, scenes_file: Path, colour: str, shape: str, k: int) -> str:
    """What the top ``k`` results of the query really show, from the synthetic scenes' ground truth."""
    from mammut_video.embed import EmbeddingIndex

    scenes = json.loads(scenes_file.read_text())
    shown = {name: {(s["colour"], s["shape"]) for s in scene["shapes"]} for name, scene in scenes.items()}
    hits = EmbeddingIndex(index).search(f"a {colour} {shape}", k=k)
    top = [shown[Path(str(h.path)).stem] for h in hits]
    both = sum((colour, shape) in s for s in top)
    coloured = sum(any(c == colour for c, _ in s) for s in top)
    base = sum((colour, shape) in s for s in shown.values()) / len(shown)
    return (f"ground truth of the top {k}: {both} show a {colour} {shape}, {coloured} a {colour} object "
            f"({100 * base:.0f}% of all demo videos show a {colour} {shape})")


def run(out: Path, num_videos: int = 400, qa_time: str = "190s", caption_time: str = "90s",
        fresh: bool = False) -> dict:
    """The whole demo; returns the test accuracy per question type and its chance level (for the tests)."""
    from mammut_video.data import load_qa

    started = time.monotonic()
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    say("\n[1/6] data")
    data = make_data(out / "data", num_videos)

    say("\n[2/6] fine-tune mammut-video-tiny on the QA train split, from random weights")
    qa_run = out / "run-qa"
    train(qa_run, ["finetune", "--train", f"msrvtt-qa:{data}", "--val", f"msrvtt-qa:{data}:val", "--out", str(qa_run),
                   "--preset", "mammut-video-tiny", "--max-time", qa_time, "--cache-clips"])

    say("\n[3/6] evaluate on the test split")
    eval_dir = out / "eval-msrvtt-qa"
    command(["eval", "msrvtt-qa", "--data-root", str(data), "--split", "test", "--checkpoint", str(qa_run / "best"),
             "--out", str(eval_dir), "--overwrite", "--no-progress"])
    metrics = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    base = chance(eval_dir)
    say("per question type, against always giving the type's most common answer:")
    for qtype, m in sorted(metrics["per_type"].items()):
        say(f"  {qtype:<6} {m['accuracy']:6.2f}  (chance {base.get(qtype, float('nan')):5.1f}, {m['total']} questions)")

    say("\n[4/6] caption and ask about a test clip")
    caption_run = out / "run-caption"
    train(caption_run, ["finetune", "--train", f"msrvtt-caption:{data}", "--val", f"msrvtt-caption:{data}:val",
                        "--out", str(caption_run), "--preset", "mammut-video-tiny", "--contrastive-weight", "1",
                        "--max-time", caption_time, "--cache-clips"])
    test = load_qa("msrvtt-qa", "test", data_root=data).records
    clip = test[0].video
    command(["caption", str(clip), "--checkpoint", str(caption_run / "best")])
    asked = [r for r in test if r.video == clip][:4]
    command(["ask", str(clip), *[r.question for r in asked], "--checkpoint", str(qa_run / "best")])
    say("reference answers: " + "; ".join(f"{r.question} {r.answer}" for r in asked))

    say("\n[5/6] embed every demo video, then search them with a text query")
    index = out / "embeddings"
    command(["embed", str(data / "videos"), "--checkpoint", str(caption_run / "best"), "--out", str(index),
             "--overwrite", "--no-progress"])
    html = out / "search.html"
    command(["search", str(index), "a red circle", "-k", "5", "--html", str(html)])
    say(search_check(index, data / "scenes.json", "red", "circle", 5))

    say(f"\n[6/6] done in {time.monotonic() - started:.0f} s. Outputs:")
    for name, path in [("QA run (checkpoints, metrics.jsonl)", qa_run), ("training curves", qa_run / "curves.png"),
                       ("test metrics", eval_dir / "metrics.json"), ("test predictions", eval_dir / "predictions.jsonl"),
                       ("caption run", caption_run), ("embeddings", index), ("search results", html)]:
        say(f"  {name:<38} {path}")
    return {"per_type": {t: m["accuracy"] for t, m in metrics["per_type"].items()}, "chance": base,
            "accuracy": metrics["accuracy"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="everything goes here (default: demo_out)")
    parser.add_argument("--num-videos", type=int, default=400, help="synthetic videos, about 60/15/25 "
                        "train/val/test (default: 400)")
    parser.add_argument("--qa-time", default="190s", help="training time of the QA run (default: 190s)")
    parser.add_argument("--caption-time", default="90s", help="training time of the caption run (default: 90s)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first: new data, new runs")
    args = parser.parse_args()
    run(args.out, args.num_videos, args.qa_time, args.caption_time, args.fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
