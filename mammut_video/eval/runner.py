"""The shared evaluation loop: shard, decode, predict, append, resume, merge, score.

A task (QA, captioning, retrieval; see ``mammut_video.eval.tasks``) turns its split into
*clip units*, one per video to decode, each covering one or more *items* (questions, or the
video itself). The loop decodes each unit once, asks the task for one prediction record per
item, and appends them to this rank's predictions file after every batch. On ``--resume``,
items already in any predictions file of the output folder are skipped. At the end rank 0
merges the files into ``predictions.jsonl`` (in split order) and scores every item of the
split, so a failed or missing prediction counts against the model.

Items whose clip failed to decode (records carrying an ``error``) are not finished: ``--resume``
evaluates them again. The settings that decide the predictions (``EvalOptions.settings``) are
recorded in the output folder when a run starts, and ``--resume`` refuses other settings.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from mammut_video.eval.distributed import DistContext
from mammut_video.eval.predictions import (
    SETTINGS_FILE,
    PredictionWriter,
    check_can_write,
    check_resume_settings,
    load_done,
    merge_predictions,
    remove_predictions,
    write_settings,
)


@dataclass
class ClipUnit:
    """One clip to decode (``video`` between ``start`` and ``end`` seconds) and the item keys it serves."""

    video: Path
    video_id: str
    keys: list[str]
    start: float | None = None
    end: float | None = None
    missing: bool = False  # the file is not on disk: its items are failed without decoding


class EvalTask(Protocol):
    """What the loop needs from a task."""

    key: str  # record field holding the item id ("question_id" or "video_id")
    unit_name: str  # progress-bar unit ("question", "video")

    def units(self) -> list[ClipUnit]: ...

    def predict(self, model: Any, video: torch.Tensor, units: Sequence[ClipUnit]) -> list[dict]:
        """Records for every pending key of ``units``; video (len(units), C, T, H, W)."""
        ...

    def failed(self, unit: ClipUnit, error: str) -> list[dict]: ...

    def settings(self) -> dict:
        """Task settings that decide the predictions (protocol, generation, answer list)."""
        ...

    def score(self, model: Any, records: dict[str, dict]) -> dict: ...


@dataclass
class EvalOptions:
    out_dir: Path
    num_frames: int
    batch_size: int = 8
    workers: int = 4
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    settings: dict | None = None  # what decides the predictions; recorded, and checked on resume


@dataclass
class EvalRun:
    """What one call of :func:`run_eval` did (rank 0 also holds the metrics)."""

    metrics: dict | None
    total_items: int
    resumed_items: int
    evaluated_items: int
    records: dict[str, dict] = field(default_factory=dict)  # rank 0: the merged predictions, by key
    seconds: float = 0.0


LoaderFactory = Callable[[list[ClipUnit], int, int], Any]


def own_predictions_path(out_dir: Path, ctx: DistContext) -> Path:
    return out_dir / ("predictions.jsonl" if not ctx.distributed else f"predictions.rank{ctx.rank}.jsonl")


def run_eval(task: EvalTask, model: Any, ctx: DistContext, opts: EvalOptions, make_loader: LoaderFactory) -> EvalRun:
    """Evaluate every item of ``task`` and, on rank 0, return its metrics.

    ``make_loader(units, batch_size, workers)`` yields dicts ``{"video": (B', C, T, H, W),
    "items": [{"index": i, ...} of the decoded units], "failed": [(index, path, error)]}`` with
    indices into ``units`` (``mammut_video.data.ClipDataset`` + ``make_loader`` do this).
    """
    out_dir = opts.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    check_can_write(out_dir, opts.resume, opts.overwrite)  # every rank: same files, same verdict
    checked = True
    if opts.resume and opts.settings is not None:
        checked = check_resume_settings(out_dir, opts.settings)
    ctx.barrier()

    def prepare() -> None:
        if opts.overwrite:
            remove_predictions(out_dir)
        if not checked:
            print(f"warning: {out_dir} has no {SETTINGS_FILE} (written by an older version): cannot check that "
                  "its predictions were made with the same checkpoint and settings", file=sys.stderr)
        if opts.settings is not None:
            write_settings(out_dir, opts.settings)

    ctx.on_main(prepare)

    units = task.units()
    order = [k for u in units for k in u.keys]
    own_path = own_predictions_path(out_dir, ctx)
    done = load_done(out_dir, task.key, repair_path=own_path) if opts.resume else {}
    done = {k: r for k, r in done.items() if not r.get("error")}  # failed clips are tried again
    resumed = sum(1 for k in order if k in done)
    pending: list[ClipUnit] = []
    for u in units:
        keys = [k for k in u.keys if k not in done]
        if keys:
            pending.append(ClipUnit(u.video, u.video_id, keys, u.start, u.end, u.missing))
    mine = ctx.shard(pending)
    ctx.barrier()  # every rank has read the files before anyone appends

    started = time.perf_counter()
    evaluated = 0
    bar = _progress(sum(len(u.keys) for u in mine), task.unit_name, ctx, opts.progress)
    with PredictionWriter(own_path) as writer:
        missing = [u for u in mine if u.missing]
        for u in missing:
            writer.write(task.failed(u, f"{u.video}: video file not found"))
            evaluated += len(u.keys)
            bar.update(len(u.keys))
        present = [u for u in mine if not u.missing]
        if present:
            model.eval()
            for batch in make_loader(present, opts.batch_size, opts.workers):
                records: list[dict] = []
                for index, _, error in batch["failed"]:
                    unit = present[index]
                    records += task.failed(unit, str(error))
                if batch["items"]:
                    units_ok = [present[item["index"]] for item in batch["items"]]
                    with torch.inference_mode():
                        records += task.predict(model, batch["video"].to(ctx.device), units_ok)
                writer.write(records)
                evaluated += len(records)
                bar.update(len(records))
    bar.close()
    seconds = time.perf_counter() - started
    ctx.barrier()

    evaluated_all = sum(_gather([evaluated], ctx))

    def score() -> tuple[dict, dict[str, dict]]:
        merged = merge_predictions(out_dir, task.key, order)
        return task.score(model, merged), merged

    metrics, merged = ctx.on_main(score) or (None, {})
    return EvalRun(metrics, len(order), resumed, evaluated_all, merged, seconds)


def _gather(values: list, ctx: DistContext) -> list:
    """Concatenate a small picklable list from every rank (in rank order)."""
    if not ctx.distributed:
        return list(values)
    parts: list[list | None] = [None] * ctx.world_size
    torch.distributed.all_gather_object(parts, values)
    return [v for part in parts for v in (part or [])]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, unit: str, ctx: DistContext, enabled: bool) -> Any:
    """tqdm bar with items/s and ETA, on rank 0 only; on a non-TTY it updates every 30 s."""
    if not enabled or not ctx.is_main:
        return _NoBar()
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, unit=unit, desc="eval", dynamic_ncols=True, smoothing=0.05,
                mininterval=0.5 if tty else 30.0)
