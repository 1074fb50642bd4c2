"""``evaluate(config)``: load the checkpoint and the split, run the sharded loop, score, write the results.

Writes ``predictions.jsonl`` (one line per question / video), ``settings.json`` (what decides
the predictions, recorded when the run starts and checked by ``resume``; the annotation file
by path and by the SHA-256 of its bytes) and ``metrics.json``
(metrics plus those settings, counts, date, failed videos; every path absolute) to the output
folder, and returns an :class:`EvalResult`. Under ``torchrun`` every rank evaluates a slice;
rank 0 merges, scores and holds the metrics.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammut_video.errors import ConfigError
from mammut_video.eval.config import CaptionOptions, EvalConfig, QAOptions
from mammut_video.eval.registry import TaskInfo, task_info

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


@dataclass
class EvalResult:
    """What :func:`evaluate` did. On ranks other than 0 of a torchrun group only ``out_dir`` is set."""

    task: str
    split: str
    out_dir: Path
    metrics: dict | None = None
    rows: list[tuple[str, str]] = field(default_factory=list)  # the task's report lines
    counts: dict = field(default_factory=dict)
    failed_videos: list[dict] = field(default_factory=list)

    @property
    def predictions_path(self) -> Path:
        return self.out_dir / "predictions.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / METRICS_FILE

    def table(self) -> str:
        """The metrics as a two-column table (caption scores shown x100, as papers report them)."""
        rows = [("task", f"{self.task} ({self.split})"), *self.rows]
        if self.failed_videos:
            rows.append(("failed videos", f"{len(self.failed_videos)} (listed in metrics.json)"))
        width = max(len(k) for k, _ in rows)
        rule = "-" * (width + 2 + max(len(v) for _, v in rows))
        return "\n".join([rule, *(f"{k.ljust(width)}  {v}" for k, v in rows), rule])


def _check_paths(config: EvalConfig) -> Path:
    """Fail early, in one line, on a checkpoint or data root that is not there; returns the checkpoint."""
    ckpt = Path(config.checkpoint)  # type: ignore[arg-type]
    if not ckpt.exists():
        raise ConfigError(f"checkpoint {ckpt} not found")
    if not (ckpt / "config.json").is_file():
        raise ConfigError(f"checkpoint {ckpt} has no config.json: expected a directory written by "
                          "model.save_pretrained (config.json + model.safetensors + tokenizer)")
    if config.data_root is not None and not Path(config.data_root).is_dir():
        raise ConfigError(f"data root {config.data_root} not found (looked for a folder holding the "
                          f"{config.task} annotations and videos; layouts: datasets/*/README.md)")
    return ckpt.resolve()


def _load_split(info: TaskInfo, config: EvalConfig) -> Any:
    from mammut_video import data

    where = {"data_root": config.data_root, "annotations": config.annotations, "videos": config.videos}
    if info.kind == "qa":
        return data.load_qa(info.dataset, config.split, **where)
    if info.kind == "caption":
        return data.load_captions(info.dataset, config.split, **where)
    return data.load_retrieval_1ka(config.split, **where)


def _candidates(info: TaskInfo, options: QAOptions, config: EvalConfig, split: Any) -> tuple[list[str], str]:
    """Candidate answers of the rank protocol and where they came from.

    Default: every answer of the training split that goes with the evaluated split's annotation
    file (the same file when it holds all splits, else the train file beside it, else one under
    the data root).
    """
    from mammut_video import data

    if options.answer_list is not None:
        path = Path(options.answer_list)
        try:
            return data.read_answer_file(path), str(path.resolve())
        except (data.AnnotationError, ConfigError) as err:
            raise ConfigError(f"--answer-list {err}") from None
    try:
        train = data.find_train_annotations(info.dataset, split.annotation_file, config.data_root)
    except data.DatasetNotFoundError as err:
        raise ConfigError(f"--protocol rank ranks the training split's answers, but {err}; pass the candidate "
                          "answers with --answer-list FILE") from None
    answers = data.train_answers(info.dataset, annotations=train)
    if not answers:
        raise ConfigError(f"--protocol rank: the train split in {train} holds no answers; pass --answer-list FILE")
    return answers, f"train split of {train.resolve()}"


def _make_task(info: TaskInfo, config: EvalConfig, split: Any) -> tuple[Any, str | None]:
    from mammut_video.eval.tasks import CaptionTask, QATask, RetrievalTask

    options = config.options
    if isinstance(options, QAOptions):
        candidates, source = (None, None)
        if options.protocol == "rank":
            candidates, source = _candidates(info, options, config, split)
        return QATask(split, options.protocol, candidates, options.question_batch, config.limit,
                      rank_batch=options.rank_batch), source
    if isinstance(options, CaptionOptions):
        return CaptionTask(split, config.limit, meteor=options.meteor), None
    return RetrievalTask(split, config.limit), None


def checkpoint_identity(ckpt: Path) -> dict:
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
            vid = str(rec["video_id"])
            entry = out.setdefault(vid, {"video_id": vid, "error": rec["error"], "items": 0})
            entry["items"] += 1
    return list(out.values())


def _missing_message(video: Path) -> str:
    """Why a video the annotations name is not there, as ``read_clip`` would say it."""
    from mammut_video.video import VideoDecodeError
    from mammut_video.video.container import check_file

    try:
        check_file(video)
    except VideoDecodeError as err:
        return str(err)
    return f"{video}: video file not found"


def _predict(task: Any, model: Any, config: EvalConfig, frames: int, device: Any, precision: str):
    """The loop's work function: decode each unit's clip once and predict all its pending items
    (under ``precision`` autocast; the first batch's time is logged when the model is compiled)."""
    import time

    from mammut_video.data import ClipDataset, make_loader
    from mammut_video.runtime.precision import inference_autocast

    first_batch = True

    def predict(batch: dict, decoded: list) -> list[dict]:
        nonlocal first_batch
        started = time.perf_counter()
        with inference_autocast(device, precision):
            records = task.predict(model, batch["video"].to(device), decoded)
        if first_batch and config.compile:
            log.info("first batch with torch.compile: %.1f s (compilation included)", time.perf_counter() - started)
        first_batch = False
        return records

    def work(units: list) -> Iterator[tuple[list[dict], int]]:
        for unit in (u for u in units if u.missing):
            yield task.failed(unit, _missing_message(unit.video)), len(unit.keys)
        present = [u for u in units if not u.missing]
        if not present:
            return
        dataset = ClipDataset(present, transform=model.clip_transform(), num_frames=frames)
        for batch in make_loader(dataset, config.batch_size, config.workers):
            records: list[dict] = []
            for index, _, error in batch["failed"]:
                records += task.failed(present[index], str(error))
            if batch["items"]:
                records += predict(batch, [present[item["index"]] for item in batch["items"]])
            yield records, len(records)

    return work


def evaluate(config: EvalConfig) -> EvalResult:
    """Run one evaluation (see the module docstring); every rank of a torchrun group calls it."""
    import torch

    from mammut_video.checkpoint import read_checkpoint_config
    from mammut_video.eval.caption_metrics import CaptionMetricsError, require_java
    from mammut_video.eval.predictions import PredictionStore, merge_predictions, prediction_files
    from mammut_video.model import load_model
    from mammut_video.runtime.distributed import init_distributed
    from mammut_video.runtime.loop import run_sharded
    from mammut_video.runtime.precision import default_precision, inference_autocast
    from mammut_video.runtime.rundir import file_sha256, open_run_dir, write_json

    info = task_info(config.task)
    ckpt = _check_paths(config)
    if info.kind == "caption":
        require_java()  # before hours of captioning, not after
    split = _load_split(info, config)
    if not split.records:
        raise ConfigError(f"{split.annotation_file}: the {split.split} split holds no {info.item}s")
    task, candidates_from = _make_task(info, config, split)
    out_dir = config.out_dir
    frames = config.frames or read_checkpoint_config(ckpt)["model"].get("num_frames", 1)
    settings = {
        "task": config.task, "dataset": split.dataset, "split": split.split,
        "annotation_file": str(Path(split.annotation_file).resolve()),
        "annotation_sha256": file_sha256(split.annotation_file),  # an answer edited in place changes it
        "video_dir": str(Path(split.video_dir).resolve()) if split.video_dir is not None else None,
        **checkpoint_identity(ckpt), "frames": frames, **task.settings(),
    }
    result = EvalResult(config.task, split.split, out_dir.resolve())
    with init_distributed(config.device) as ctx:
        if ctx.is_main:
            log.info(split.summary() + (f"; evaluating the first {config.limit} (--limit)" if config.limit else ""))
        precision = config.precision or default_precision(ctx.device)
        settings["precision"] = precision  # bf16 / fp16 predictions differ a little from fp32's
        store = PredictionStore(out_dir, task.key, ctx.rank, ctx.world_size)
        open_run_dir(out_dir, lambda: prediction_files(out_dir), settings, config.resume, config.overwrite, ctx)
        model = load_model(str(ckpt), map_location=ctx.device)
        if config.compile:
            model.compile_inference()
        torch.manual_seed(0)
        units = task.units()
        stats = run_sharded(units, _predict(task, model, config, frames, ctx.device, precision), store, ctx,
                            desc="eval", unit_name=task.unit_name, show_progress=config.progress)
        order = [k for u in units for k in u.keys]

        def score() -> tuple[dict, dict[str, dict]]:
            merged = merge_predictions(out_dir, task.key, order)
            try:
                with inference_autocast(ctx.device, precision):  # retrieval embeds its texts here
                    return task.score(model, merged), merged
            except CaptionMetricsError as err:
                raise CaptionMetricsError(f"{err}. The captions are saved in {result.predictions_path}: fix this "
                                          "and run again with --resume to score them") from None

        scored = ctx.on_main(score)
    if scored is None:
        return result
    metrics, merged = scored
    failed = _failed_videos(merged)
    failed_items = sum(f["items"] for f in failed)
    result.metrics, result.rows, result.failed_videos = metrics, task.rows(metrics), failed
    result.counts = {"items": stats.total, "predicted": stats.total - failed_items, "failed_items": failed_items,
                     "failed_videos": len(failed), "limit": config.limit}
    payload = {
        **settings,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "counts": result.counts,
        "metrics": metrics,
        "failed_videos": failed,
        "run": {"world_size": ctx.world_size, "compile": config.compile, "resumed_items": stats.resumed, "evaluated_items": stats.processed,
                "seconds": round(stats.seconds, 2),
                "items_per_second": round(stats.processed / stats.seconds, 3) if stats.seconds else None},
    }
    if candidates_from is not None:
        payload["answer_list"] = {**payload["answer_list"], "source": candidates_from}
    write_json(result.metrics_path, payload)
    if failed:
        log.warning("%d videos could not be read; their %d items count as wrong (--resume tries them again). "
                    "First: %s", len(failed), failed_items, failed[0]["error"])
    return result
