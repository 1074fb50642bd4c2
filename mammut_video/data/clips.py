"""Clips for the model: a Dataset that never raises on a bad video, a DataLoader that decodes
in worker processes, and a log of the clips that failed.

A bad clip (missing, corrupt, too short for its segment) becomes an item with
``video=None`` and an ``error`` naming the file; the collate function stacks the good clips
and hands the failed ones back separately, so an epoch or an evaluation runs to the end and
reports what it skipped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mammut_video.data.records import CaptionRecord, QARecord, VideoRecord
from mammut_video.errors import ConfigError, error_text

Record = QARecord | CaptionRecord | VideoRecord
log = logging.getLogger(__name__)


class ClipDataset(Dataset):
    """Decodes ``num_frames`` frames of each record's video and applies ``transform``.

    Args:
        items: records with ``.video`` (path) and optional ``.start`` / ``.end`` (seconds):
            :class:`QARecord`, :class:`CaptionRecord`, :class:`VideoRecord` or any dataclass
            shaped like them.
        transform: uint8 (T, H, W, C) -> float (C, T, H, W), e.g.
            ``mammut_video.video.build_clip_transform(...)`` or ``model.preprocess``. None
            keeps the uint8 (T, H, W, C) frames.
        num_frames: frames per clip.
        sampling: frame sampling passed to ``read_clip`` ("uniform", "random", ...).
        fps: sample ``num_frames`` frames at this rate (``read_clip(sampling="fps")``); with the
            default ``sampling`` it switches to "fps", with any other mode it is a ValueError.
        backend: decoder passed to ``read_clip`` (None: its default).
        seed: with random sampling, item ``i`` uses generator seed ``seed + i`` (reproducible
            whatever the worker); None leaves it to the worker's RNG.
        reader: replaces ``mammut_video.video.read_clip`` (same signature).

    ``dataset[i]`` is a dict: ``index``, ``video`` (the transformed clip, or None when it
    failed), ``error`` (None, or a message naming the file), ``path`` (str) and the record's
    other fields (``question``, ``answer``, ``captions``, ``video_id``, ...).
    """

    def __init__(self, items: Sequence[Record], transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 num_frames: int = 16, sampling: str = "uniform", *, fps: float | None = None,
                 backend: str | None = None, seed: int | None = None,
                 reader: Callable[..., torch.Tensor] | None = None):
        from mammut_video.video.sampling import check_sampling_args

        if fps is not None and sampling == "uniform":
            sampling = "fps"  # a rate replaces the default spread; any other mode with fps is an error
        check_sampling_args(num_frames, sampling, fps, None, None)
        self.items = items
        self.transform = transform
        self.num_frames, self.sampling, self.fps, self.backend = num_frames, sampling, fps, backend
        self.seed = seed
        self.reader = reader

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, record: Record, index: int) -> torch.Tensor:
        reader = self.reader
        if reader is None:
            from mammut_video.video import read_clip as reader
        kwargs: dict[str, Any] = {"sampling": self.sampling}
        for name in ("fps", "backend"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        if getattr(record, "start", None) is not None:
            kwargs["start"] = record.start
        if getattr(record, "end", None) is not None:
            kwargs["end"] = record.end
        if self.seed is not None:
            kwargs["generator"] = torch.Generator().manual_seed(self.seed + index)
        return reader(record.video, self.num_frames, **kwargs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.items[index]
        if dataclasses.is_dataclass(record):
            fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "video"}
        else:
            fields = {k: v for k, v in vars(record).items() if k != "video" and not k.startswith("_")}
        item: dict[str, Any] = {"index": index, "video": None, "error": None, "path": str(record.video), **fields}
        try:
            frames = self._read(record, index)
            item["video"] = self.transform(frames) if self.transform is not None else frames
        except Exception as err:  # noqa: BLE001 - one bad clip must not end an epoch; it is reported
            message = str(err)
            if str(record.video) not in message:
                message = f"{record.video}: {error_text(err)}"
            item["error"] = message
        return item


def collate_clips(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good clips of a batch; hand back the failed ones separately.

    Returns:
        ``{"video": (B', C, T, H, W) tensor or None when every clip failed,
        "items": [the B' good items without "video"], "failed": [(index, path, error)]}``.
    """
    good = [b for b in batch if b["video"] is not None]
    failed = [(b["index"], b["path"], b["error"]) for b in batch if b["video"] is None]
    video = None
    if good:
        shapes = {tuple(b["video"].shape) for b in good}
        if len(shapes) > 1:
            raise ConfigError(f"clips of one batch differ in shape {sorted(shapes)}: give ClipDataset a "
                             "transform that resizes to one size")
        video = torch.stack([b["video"] for b in good])
    items = [{k: v for k, v in b.items() if k != "video"} for b in good]
    return {"video": video, "items": items, "failed": failed}


def _single_thread_worker(_: int) -> None:
    # decoders already use their own threads; one torch thread per worker avoids oversubscription
    torch.set_num_threads(1)


def make_loader(dataset: Dataset, batch_size: int, workers: int, shuffle: bool = False,
                sampler: Sampler | None = None, *, drop_last: bool = False, pin_memory: bool = False,
                prefetch_factor: int | None = None, persistent_workers: bool = False,
                collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None) -> DataLoader:
    """A DataLoader that decodes in ``workers`` processes (0: in this process) with :func:`collate_clips`
    (or ``collate_fn``, which must be picklable and keep its contract: the good clips stacked, the
    failed ones handed back).

    Pass a ``DistributedSampler`` as ``sampler`` under torchrun (then ``shuffle`` must be False).
    """
    if sampler is not None and shuffle:
        raise ConfigError("make_loader: give either shuffle=True or a sampler (which shuffles itself), not both")
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(worker_init_fn=_single_thread_worker, persistent_workers=persistent_workers)
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
                      collate_fn=collate_fn or collate_clips, drop_last=drop_last, pin_memory=pin_memory, **kwargs)


class FailureLog:
    """Clips that could not be read during a run; summarised at the end instead of crashing.

    Feed it collated batches (:meth:`update`) or single failures (:meth:`add`).
    """

    def __init__(self, name: str = "clips"):
        self.name = name
        self.failures: list[tuple[int, str, str]] = []
        self.seen = 0

    def add(self, index: int, path: str | Path, error: str) -> None:
        self.failures.append((int(index), str(path), str(error)))

    def update(self, batch: dict[str, Any]) -> None:
        """Record a batch from :func:`collate_clips` (counts its good and failed items)."""
        self.seen += len(batch["items"]) + len(batch["failed"])
        for index, path, error in batch["failed"]:
            self.add(index, path, error)

    def extend(self, failures: Iterable[tuple[int, str, str]]) -> None:
        for index, path, error in failures:
            self.add(index, path, error)

    def __len__(self) -> int:
        return len(self.failures)

    def summary(self, limit: int = 20) -> str:
        if not self.failures:
            return f"{self.name}: all {self.seen} clips read" if self.seen else f"{self.name}: no failures"
        of = f" of {self.seen}" if self.seen else ""
        lines = [f"{self.name}: {len(self.failures)}{of} clips could not be read and were skipped:"]
        lines += [f"  [{i}] {err}" if path in err else f"  [{i}] {path}: {err}"
                  for i, path, err in sorted(self.failures)[:limit]]
        if len(self.failures) > limit:
            lines.append(f"  ... and {len(self.failures) - limit} more")
        return "\n".join(lines)

    def report(self, stream: TextIO | None = None) -> None:
        """When anything failed: :meth:`summary` as a warning of this module's logger, or printed to ``stream``."""
        if not self.failures:
            return
        if stream is None:
            log.warning(self.summary())
        else:
            print(self.summary(), file=stream)

    def to_json(self) -> list[dict[str, Any]]:
        return [{"index": i, "path": p, "error": e} for i, p, e in sorted(self.failures)]
