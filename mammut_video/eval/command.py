"""``mammut-video eval TASK``: load checkpoint and split, run the shared loop, write the results.

Writes ``predictions.jsonl`` (one line per question / video), ``settings.json`` (what decides
the predictions, recorded when the run starts and checked by ``--resume``) and ``metrics.json``
(metrics plus those settings, counts, date, failed videos; every path absolute) to ``--out`` and
prints a table. Under ``torchrun`` every rank evaluates a slice; rank 0 merges, scores and reports.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
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

# option defaults, for a Namespace built by hand (the parsers set them too)
DEFAULTS: dict[str, Any] = {
    "data_root": None, "checkpoint": None, "split": "test", "annotations": None, "videos": None, "frames": None,
    "batch_size": 8, "question_batch": 64, "rank_batch": 256, "workers": 4, "limit": None, "out": None,
    "protocol": None, "answer_list": None, "resume": False, "overwrite": False, "device": None,
    "no_meteor": False, "no_progress": False,
}


class EvalError(RuntimeError):
    """A problem with the command's inputs, reported as one line without a traceback."""


def _opt(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, DEFAULTS[name])


def _load_split(kind: str, dataset: str, args: argparse.Namespace) -> Any:
    from mammut_video import data

    where = {"data_root": _opt(args, "data_root"), "annotations": _opt(args, "annotations"), "videos": _opt(args, "videos")}
    split = _opt(args, "split")
    try:
        if kind == "qa":
            return data.load_qa(dataset, split, **where)
        if kind == "caption":
            return data.load_captions(dataset, split, **where)
        return data.load_retrieval_1ka(split, **where)
    except data.DatasetNotFoundError:
        raise
    except data.AnnotationError:
        raise  # names the file and the record already
    except ValueError as err:  # unknown split name
        raise EvalError(f"{args.task} --split {split!r}: {err}") from None
    except OSError as err:  # unreadable folder or file
        raise EvalError(f"{args.task} --split {split!r}: {err}") from None


def _read_answer_list(path: Path) -> list[str]:
    """``--answer-list``: a JSON list of strings (``.json``) or one answer per line; blanks dropped."""
    if not path.exists():
        raise EvalError(f"--answer-list {path}: no such file")
    if not path.is_file():
        raise EvalError(f"--answer-list {path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise EvalError(f"--answer-list {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise EvalError(f"--answer-list {path}: cannot be read ({err.strerror or err})") from None
    if path.suffix.lower() == ".json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as err:
            raise EvalError(f"--answer-list {path}: malformed JSON at line {err.lineno} column {err.colno}: "
                            f"{err.msg} (expected a JSON list of answer strings; a file not ending in .json is "
                            "read as one answer per line)") from None
        if not isinstance(loaded, list):
            raise EvalError(f"--answer-list {path}: expected a JSON list of answer strings, got {type(loaded).__name__}")
        for i, a in enumerate(loaded):
            if not isinstance(a, str):
                raise EvalError(f"--answer-list {path}: entry {i} is {type(a).__name__} {a!r}, expected a string")
        answers = [a.strip() for a in loaded if a.strip()]
    else:
        answers = [line.strip() for line in text.splitlines() if line.strip()]
    if not answers:
        raise EvalError(f"--answer-list {path} holds no answers")
    return answers


def _candidates(args: argparse.Namespace, dataset: str, split: Any) -> tuple[list[str], str]:
    """Candidate answers of the rank protocol and where they came from.

    Default: every answer of the training split that goes with the evaluated split's annotation
    file (the same file when it holds all splits, else the train file beside it, else one under
    --data-root).
    """
    from mammut_video import data

    answer_list = _opt(args, "answer_list")
    if answer_list is not None:
        path = Path(answer_list)
        return _read_answer_list(path), str(path.resolve())
    try:
        train = data.find_train_annotations(dataset, split.annotation_file, _opt(args, "data_root"))
    except data.DatasetNotFoundError as err:
        raise EvalError(f"--protocol rank ranks the training split's answers, but {err}; pass the candidate "
                        "answers with --answer-list FILE") from None
    answers = data.train_answers(dataset, annotations=train)
    if not answers:
        raise EvalError(f"--protocol rank: the train split in {train} holds no answers; pass --answer-list FILE")
    return answers, f"train split of {train.resolve()}"


def _positive(value: Any, option: str, allow_zero: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise EvalError(f"{option} must be a whole number {'>= 0' if allow_zero else '>= 1'}, got {value!r}")


def _check_inputs(args: argparse.Namespace) -> None:
    if args.task not in TASKS:
        raise EvalError(f"unknown task {args.task!r}; expected one of {', '.join(TASKS)}")
    for name in ("frames", "batch_size", "question_batch", "rank_batch", "limit"):
        _positive(_opt(args, name), "--" + name.replace("_", "-"))
    _positive(_opt(args, "workers"), "--workers", allow_zero=True)
    protocol = _opt(args, "protocol")
    if TASKS[args.task][0] != "qa" and protocol not in (None, "generate"):
        raise EvalError(f"--protocol {protocol} applies to QA tasks only")
    if protocol not in (None, "generate", "rank"):
        raise EvalError(f"--protocol {protocol!r}: expected generate or rank")
    if _opt(args, "answer_list") is not None and protocol != "rank":
        raise EvalError("--answer-list gives the candidates of --protocol rank: pass --protocol rank too, "
                        "or leave --answer-list out")
    if _opt(args, "resume") and _opt(args, "overwrite"):
        raise EvalError("--resume and --overwrite contradict each other: pass one of them")
    if _opt(args, "checkpoint") is None:
        raise EvalError("no checkpoint: pass --checkpoint DIR (a directory written by model.save_pretrained "
                        "or `mammut-video convert`); nothing is downloaded")
    ckpt = Path(_opt(args, "checkpoint"))
    if not ckpt.exists():
        raise EvalError(f"checkpoint {ckpt} not found")
    if not (ckpt / "config.json").is_file():
        raise EvalError(f"checkpoint {ckpt} has no config.json: expected a directory written by "
                        "model.save_pretrained (config.json + model.safetensors + tokenizer)")
    data_root = _opt(args, "data_root")
    if data_root is None and _opt(args, "annotations") is None:
        raise EvalError("pass --data-root DIR (or --annotations FILE and --videos DIR)")
    if data_root is not None and not Path(data_root).is_dir():
        raise EvalError(f"data root {data_root} not found (looked for a folder holding the "
                        f"{args.task} annotations and videos; layouts: datasets/*/README.md)")
    out = _opt(args, "out")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise EvalError(f"--out {out} is a file, not a folder")


def _checkpoint_identity(ckpt: Path) -> dict:
    """Resolved path plus a fingerprint of its files (names, sizes, modification times)."""
    h = hashlib.sha256()
    for f in sorted(p for p in ckpt.iterdir() if p.is_file()):
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"checkpoint": str(ckpt), "checkpoint_files": h.hexdigest()[:16]}


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
    from mammut_video.eval.caption_metrics import CaptionMetricsError, require_java
    from mammut_video.eval.distributed import init_distributed
    from mammut_video.eval.report import format_table, write_metrics
    from mammut_video.eval.runner import EvalOptions, run_eval
    from mammut_video.eval.tasks import CaptionTask, QATask, RetrievalTask
    from mammut_video.model import load_model

    _check_inputs(args)
    kind, dataset = TASKS[args.task]
    if kind == "caption":
        try:
            require_java()  # before hours of captioning, not after
        except CaptionMetricsError as err:
            raise EvalError(str(err)) from None
    protocol = _opt(args, "protocol") or "generate"
    split = _load_split(kind, dataset, args)
    if not split.records:
        raise EvalError(f"{split.annotation_file}: the {split.split} split holds no "
                        f"{'questions' if kind == 'qa' else 'videos'}")
    candidates, candidates_from = (None, None)
    if kind == "qa" and protocol == "rank":
        candidates, candidates_from = _candidates(args, dataset, split)
    limit = _opt(args, "limit")
    if kind == "qa":
        task: Any = QATask(split, protocol, candidates, _opt(args, "question_batch"), limit,
                           rank_batch=_opt(args, "rank_batch"))
    elif kind == "caption":
        task = CaptionTask(split, limit, meteor=not _opt(args, "no_meteor"))
    else:
        task = RetrievalTask(split, limit)
    try:
        ctx = init_distributed(_opt(args, "device"))
    except (ValueError, RuntimeError) as err:
        raise EvalError(str(err)) from None
    try:
        if ctx.is_main:
            print(split.summary(), file=sys.stderr)
        ckpt = Path(_opt(args, "checkpoint")).resolve()
        model = load_model(str(ckpt), map_location=ctx.device)
        model.eval()
        frames = _opt(args, "frames")
        frames = frames if frames is not None else model.config.num_frames
        torch.manual_seed(0)

        def loader(units: list, batch_size: int, workers: int) -> Any:
            return make_loader(ClipDataset(units, transform=model.preprocess, num_frames=frames), batch_size, workers)

        out_dir = Path(_opt(args, "out") or f"eval/{args.task}-{split.split}")
        settings = {
            "task": args.task, "dataset": split.dataset, "split": split.split,
            "annotation_file": str(Path(split.annotation_file).resolve()),
            "video_dir": str(Path(split.video_dir).resolve()) if split.video_dir is not None else None,
            **_checkpoint_identity(ckpt), "frames": frames, **task.settings(),
        }
        opts = EvalOptions(out_dir, frames, _opt(args, "batch_size"), _opt(args, "workers"), _opt(args, "resume"),
                           _opt(args, "overwrite"), progress=not _opt(args, "no_progress"), settings=settings)
        try:
            run = run_eval(task, model, ctx, opts, loader)
        except CaptionMetricsError as err:
            raise EvalError(f"{err}. The captions are saved in {out_dir.resolve() / 'predictions.jsonl'}: "
                            "fix this and run again with --resume to score them") from None
        if ctx.is_main:
            failed = _failed_videos(run.records)
            payload = {
                **settings,
                "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                "counts": {"items": run.total_items, "predicted": run.total_items - sum(f["items"] for f in failed),
                           "failed_items": sum(f["items"] for f in failed), "failed_videos": len(failed),
                           "limit": limit},
                "metrics": run.metrics,
                "failed_videos": failed,
                "run": {"world_size": ctx.world_size, "resumed_items": run.resumed_items,
                        "evaluated_items": run.evaluated_items, "seconds": round(run.seconds, 2),
                        "items_per_second": round(run.evaluated_items / run.seconds, 3) if run.seconds else None},
            }
            if candidates_from is not None:
                payload["answer_list"] = {**payload["answer_list"], "source": candidates_from}
            write_metrics(out_dir / "metrics.json", payload)
            print(format_table(args.task, split.split, run.metrics, len(failed)))
            print(f"predictions: {out_dir / 'predictions.jsonl'}\nmetrics: {out_dir / 'metrics.json'}")
            if failed:
                print(f"warning: {len(failed)} videos could not be read; their {payload['counts']['failed_items']} "
                      f"items count as wrong (--resume tries them again). First: {failed[0]['error']}",
                      file=sys.stderr)
            if run.total_items and payload["counts"]["predicted"] == 0:
                print("error: no item could be evaluated (see failed_videos in metrics.json)", file=sys.stderr)
                return 1
    finally:
        ctx.close()
    return 0
