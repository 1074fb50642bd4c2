"""Captions for video files and folders, streamed as they are made.

    import mammut_video as mv
    for c in mv.caption_videos(mv.CaptionConfig(["clip.mp4", "holiday/"], checkpoint="ckpt/")):
        print(c.path, c.caption or c.error)

A folder is walked recursively for video files; clips are decoded in worker processes and
captioned in batches. A file that cannot be decoded gives a result with ``error`` set (the
``VideoDecodeError`` cause) and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mammut_video.errors import ConfigError, MissingFileError, check_int, check_segment, require_checkpoint
from mammut_video.runtime.precision import check_device_and_precision

log = logging.getLogger(__name__)


@dataclass
class CaptionConfig:
    """Videos to caption: files and folders (walked recursively). ``start`` / ``end`` (seconds)
    apply to every file and are checked here, before any work (finite, start >= 0, end > start).
    ``num_beams`` 1 is greedy decoding. ``precision``: fp32 / bf16 / fp16 autocast, None for the
    device's default (fp32 on the CPU, bf16 on CUDA). ``compile``: torch.compile the encoder and
    the decoder's cached step (same captions; the first batches pay the compilation)."""

    inputs: list[str | Path]
    checkpoint: str | Path
    frames: int | None = None
    start: float | None = None
    end: float | None = None
    num_beams: int = 1
    max_new_tokens: int = 30
    batch_size: int = 8
    workers: int = 2
    device: str | None = None
    precision: str | None = None
    compile: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.inputs, (str, Path)):
            self.inputs = [self.inputs]
        require_checkpoint(self.checkpoint)
        if not self.inputs:
            raise ConfigError("no video to caption: give files or folders")
        for name in ("num_beams", "max_new_tokens", "batch_size"):
            setattr(self, name, check_int(getattr(self, name), name))
        self.workers = check_int(self.workers, "workers", minimum=0)
        if self.frames is not None:
            self.frames = check_int(self.frames, "frames")
        check_device_and_precision(self.device, self.precision)
        self.start, self.end = check_segment(self.start, self.end)


@dataclass
class CaptionResult:
    """One file's caption, or the reason it has none. ``given``: named on the command line itself
    (not found in a folder)."""

    path: Path
    caption: str | None = None
    error: str | None = None
    given: bool = True


def video_records(inputs: list[str | Path], start: float | None = None, end: float | None = None) -> list:
    """One ``VideoRecord`` per file named or found in a folder named; :class:`MissingFileError` for
    a path that does not exist. A folder holding no video is an error too."""
    from mammut_video.data import VideoFolder
    from mammut_video.data.records import VideoRecord

    records = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            records += [VideoRecord(r.video, r.video_id, start, end) for r in VideoFolder(path)]
        elif path.exists():
            records.append(VideoRecord(path, str(path), start, end))
        else:
            raise MissingFileError(f"{path}: no such file or folder")
    return records


def caption_videos(config: CaptionConfig) -> Iterator[CaptionResult]:
    """Caption every video of ``config``, yielding one result per file in input order."""
    from mammut_video.data import ClipDataset, make_loader
    from mammut_video.model import load_model
    from mammut_video.runtime.devices import resolve_device
    from mammut_video.runtime.precision import inference_autocast
    from mammut_video.runtime.progress import progress

    given = {Path(p) for p in config.inputs if not Path(p).is_dir()}
    records = video_records(config.inputs, config.start, config.end)
    device = resolve_device(config.device)
    model = load_model(str(config.checkpoint), map_location=device)
    if config.compile:
        model.compile_inference()
    frames = config.frames or model.config.num_frames
    dataset = ClipDataset(records, transform=model.clip_transform(), num_frames=frames)
    results: dict[int, CaptionResult] = {}
    next_index = failed = 0
    with progress(len(records), "caption", "video", enabled=config.progress) as bar:
        for batch in make_loader(dataset, config.batch_size, config.workers):
            for index, path, error in batch["failed"]:
                results[index] = CaptionResult(Path(path), error=str(error), given=Path(path) in given)
            if batch["failed"]:
                failed += len(batch["failed"])
                bar.set_postfix(failed=failed)
            if batch["items"]:
                with inference_autocast(device, config.precision):
                    captions = model.caption(batch["video"].to(device), num_beams=config.num_beams,
                                             max_new_tokens=config.max_new_tokens)
                for item, caption in zip(batch["items"], captions):
                    results[item["index"]] = CaptionResult(Path(item["path"]), caption, given=Path(item["path"]) in given)
            bar.update(len(batch["items"]) + len(batch["failed"]))
            while next_index in results:  # batches arrive in order; yield as soon as the prefix is complete
                yield results.pop(next_index)
                next_index += 1
