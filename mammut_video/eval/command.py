"""``mammut-video eval TASK``: load checkpoint and split, run the shared loop, write the results.

Writes ``predictions.jsonl`` (one line per question / video) and ``metrics.json`` (metrics plus
checkpoint, split, protocol, frames, counts, date, failed videos) to ``--out`` and prints a
table. Under ``torchrun`` every rank evaluates a slice; rank 0 merges, scores and reports.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path
from typing import Any

TASKS: dict[str, tuple[str, str]] = {
    "msrvtt-qa": ("qa", "msrvtt-qa"),
    "msvd-qa": ("qa", "msvd-qa"),
    "msrvtt-caption": ("caption", "msrvtt"),
    "msvd-caption": ("caption", "msvd"),
    "msrvtt-retrieval": ("retrieval", "msrvtt-1ka"),
}


class EvalError(RuntimeError):
    """A problem with the command's inputs, reported as one line without a traceback."""


def _load_split(kind: str, dataset: str, args: argparse.Namespace) -> Any:
    from mammut_video import data

    where = {"data_root": args.data_root, "annotations": args.annotations, "videos": args.videos}
    try:
        if kind == "qa":
            return data.load_qa(dataset, args.split, **where)
        if kind == "caption":
            return data.load_captions(dataset, args.split, **where)
        return data.load_retrieval_1ka(args.split, **where)
    except data.DatasetNotFoundError:
        raise
    except ValueError as err:  # unknown split name, malformed annotation file (names file and record)
        raise EvalError(f"{args.task} split {args.split!r}: {err}") from None


def _candidates(args: argparse.Namespace, dataset: str) -> list[str]:
    from mammut_video import data

    if args.answer_list is None:
        return data.train_answers(dataset, data_root=args.data_root)
    path = Path(args.answer_list)
    if not path.is_file():
        raise EvalError(f"--answer-list {path} not found")
    if path.suffix == ".json":
        import json

        answers = json.loads(path.read_text())
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise EvalError(f"{path}: expected a JSON list of answer strings")
    else:
        answers = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not answers:
        raise EvalError(f"--answer-list {path} holds no answers")
    return answers


def _check_inputs(args: argparse.Namespace) -> None:
    if args.checkpoint is None:
        raise EvalError("no checkpoint: pass --checkpoint DIR (a directory written by model.save_pretrained "
                        "or `mammut-video convert`); nothing is downloaded")
    ckpt = Path(args.checkpoint)
    if not ckpt.exists():
        raise EvalError(f"checkpoint {ckpt} not found")
    if not (ckpt / "config.json").is_file():
        raise EvalError(f"checkpoint {ckpt} has no config.json: expected a directory written by "
                        "model.save_pretrained (config.json + model.safetensors + tokenizer)")
    if args.data_root is None and args.annotations is None:
        raise EvalError("pass --data-root DIR (or --annotations FILE and --videos DIR)")
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise EvalError(f"data root {args.data_root} not found (looked for a folder holding the "
                        f"{args.task} annotations and videos; layouts: datasets/*/README.md)")


def _failed_videos(records: dict[str, dict]) -> list[dict]:
    """Videos whose items carry an error, with the error and how many items it cost."""
    out: dict[str, dict] = {}
    for rec in records.values():
        if rec.get("error"):
            entry = out.setdefault(str(rec["video_id"]), {"video_id": str(rec["video_id"]), "error": rec["error"], "items": 0})
            entry["items"] += 1
    return list(out.values())


def evaluate(args: argparse.Namespace) -> int:
    """Run ``mammut-video eval`` with parsed arguments; returns the exit code."""
    import torch

    from mammut_video.data import ClipDataset, make_loader
    from mammut_video.eval.distributed import init_distributed
    from mammut_video.eval.report import format_table, write_metrics
    from mammut_video.eval.runner import EvalOptions, run_eval
    from mammut_video.eval.tasks import CaptionTask, QATask, RetrievalTask
    from mammut_video.model import load_model

    _check_inputs(args)
    kind, dataset = TASKS[args.task]
    if kind != "qa" and args.protocol != "generate":
        raise EvalError(f"--protocol {args.protocol} applies to QA tasks only")
    split = _load_split(kind, dataset, args)
    ctx = init_distributed(args.device)
    try:
        if ctx.is_main:
            print(split.summary(), file=sys.stderr)
        if kind == "qa":
            candidates = _candidates(args, dataset) if args.protocol == "rank" else None
            task: Any = QATask(split, args.protocol, candidates, args.question_batch, args.limit)
        elif kind == "caption":
            task = CaptionTask(split, args.limit, meteor=not args.no_meteor)
        else:
            task = RetrievalTask(split, args.limit)
        model = load_model(args.checkpoint, map_location=ctx.device)
        model.eval()
        frames = args.frames or model.config.num_frames
        torch.manual_seed(0)

        def loader(units: list, batch_size: int, workers: int) -> Any:
            return make_loader(ClipDataset(units, transform=model.preprocess, num_frames=frames), batch_size, workers)

        out_dir = Path(args.out or f"eval/{args.task}-{split.split}")
        opts = EvalOptions(out_dir, frames, args.batch_size, args.workers, args.resume, args.overwrite,
                           progress=not args.no_progress)
        run = run_eval(task, model, ctx, opts, loader)
        if ctx.is_main:
            failed = _failed_videos(run.records)
            payload = {
                "task": args.task, "dataset": split.dataset, "split": split.split,
                "protocol": args.protocol if kind == "qa" else ("generate" if kind == "caption" else "contrastive"),
                "checkpoint": str(Path(args.checkpoint).resolve()), "frames": frames,
                "annotation_file": str(split.annotation_file), "video_dir": str(split.video_dir),
                "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                "counts": {"items": run.total_items, "predicted": run.total_items - sum(f["items"] for f in failed),
                           "failed_items": sum(f["items"] for f in failed), "failed_videos": len(failed),
                           "limit": args.limit},
                "metrics": run.metrics,
                "failed_videos": failed,
                "run": {"world_size": ctx.world_size, "resumed_items": run.resumed_items,
                        "evaluated_items": run.evaluated_items, "seconds": round(run.seconds, 2),
                        "items_per_second": round(run.evaluated_items / run.seconds, 3) if run.seconds else None},
            }
            write_metrics(out_dir / "metrics.json", payload)
            print(format_table(args.task, split.split, run.metrics, len(failed)))
            print(f"predictions: {out_dir / 'predictions.jsonl'}\nmetrics: {out_dir / 'metrics.json'}")
            if failed:
                print(f"warning: {len(failed)} videos could not be read; their {payload['counts']['failed_items']} "
                      f"items count as wrong. First: {failed[0]['error']}", file=sys.stderr)
            if run.total_items and payload["counts"]["predicted"] == 0:
                print("error: no item could be evaluated (see failed_videos in metrics.json)", file=sys.stderr)
                return 1
    finally:
        ctx.close()
    return 0
