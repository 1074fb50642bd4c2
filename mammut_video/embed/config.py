"""Typed settings of an embedding run (:class:`EmbedConfig`) and what it did (:class:`EmbedSummary`).

    import mammut_video as mv
    summary = mv.embed_folder("videos/", out="emb/", checkpoint="ckpt/", clip_seconds=10)
    print(summary.line())

Values are checked when the config is made (:class:`~mammut_video.errors.ConfigError`, one line);
files and folders are checked when :func:`~mammut_video.embed.embed_folder` runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from mammut_video.errors import ConfigError, check_int
from mammut_video.runtime.devices import default_workers
from mammut_video.runtime.precision import check_device_and_precision

DTYPES = ("float16", "float32")
DEFAULT_SHARD_ROWS = 4096


def check_seconds(value: object, name: str) -> float:
    """``value`` as a float if it is a finite number of seconds > 0; otherwise :class:`ConfigError`."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number of seconds, got {value!r}".lstrip(": ")) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}".lstrip())
    return seconds


@dataclass
class EmbedConfig:
    """One embedding run: every video of ``input`` into the folder ``out``.

    ``input``: a folder (walked recursively; videos by extension, other files probed) or a text /
    CSV file listing paths (one per line, or a ``path`` column with optional ``start`` / ``end``
    in seconds; relative paths are read from the list's folder). The model: ``checkpoint`` (a
    directory written by ``save_pretrained``) or ``preset`` (a preset name, randomly initialised
    with seed 0: for trying the pipeline; its embeddings mean nothing). ``frames``: frames
    sampled per clip (default the model's ``num_frames``). ``dtype``: how embeddings are stored.
    ``precision``: fp32 / bf16 / fp16 autocast, None for the device's default (fp32 on the CPU,
    bf16 on CUDA); it changes the numbers, so it is one of the settings a resumed run must share.
    ``compile``: torch.compile the video encoder (same embeddings, so a run may be resumed with
    or without it; the first batches pay the compilation). ``clip_seconds``: embed
    windows of that length every ``stride_seconds`` (default ``clip_seconds``) instead of one
    embedding per file. ``save_tokens``: also store the visual tokens (float16). ``shard_rows``:
    rows per shard file; a shard is also committed when its first row is ``commit_seconds`` old,
    so a crash loses at most that much work. Re-running into an ``out`` that holds a run with
    the same settings continues it (``resume`` says so explicitly); ``overwrite`` discards it.
    """

    input: str | Path
    out: str | Path | None = None
    checkpoint: str | Path | None = None
    preset: str | None = None
    frames: int | None = None
    batch_size: int = 8
    workers: int = field(default_factory=default_workers)  # min(4, CPU cores)
    device: str | None = None
    precision: str | None = None
    compile: bool = False
    dtype: str = "float16"
    clip_seconds: float | None = None
    stride_seconds: float | None = None
    save_tokens: bool = False
    shard_rows: int = DEFAULT_SHARD_ROWS
    commit_seconds: float = 60.0
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.out is None:
            raise ConfigError("no output folder: pass --out DIR (created if missing; an earlier run there with the "
                              "same settings is continued)")
        if (self.checkpoint is None) == (self.preset is None):
            raise ConfigError("pass either --checkpoint DIR (a directory written by model.save_pretrained or "
                              "`mammut-video convert`) or --preset NAME (random weights, for trying the pipeline)")
        if self.preset is not None:
            from mammut_video.model.presets import get_preset

            get_preset(self.preset)  # an unknown name fails here, listing the known ones
        if self.frames is not None:
            self.frames = check_int(self.frames, "frames")
        self.batch_size = check_int(self.batch_size, "batch_size")
        self.workers = check_int(self.workers, "workers", minimum=0)
        self.shard_rows = check_int(self.shard_rows, "shard_rows")
        self.commit_seconds = check_seconds(self.commit_seconds, "commit_seconds")
        check_device_and_precision(self.device, self.precision)
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r}: expected float16 or float32")
        if self.clip_seconds is not None:
            self.clip_seconds = check_seconds(self.clip_seconds, "clip_seconds")
        if self.stride_seconds is not None:
            if self.clip_seconds is None:
                raise ConfigError("--stride-seconds sets the step between --clip-seconds windows: pass --clip-seconds "
                                  "too, or leave --stride-seconds out")
            self.stride_seconds = check_seconds(self.stride_seconds, "stride_seconds")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: pass one of them")

    @property
    def out_dir(self) -> Path:
        return Path(self.out)  # type: ignore[arg-type]

    @property
    def stride(self) -> float | None:
        """Seconds between window starts (``stride_seconds``, default ``clip_seconds``)."""
        return self.stride_seconds if self.stride_seconds is not None else self.clip_seconds


@dataclass
class EmbedSummary:
    """What :func:`~mammut_video.embed.embed_folder` did; counts cover every rank of a torchrun group.

    ``inputs``: inputs found (files, or list entries). ``done``: inputs finished by this run;
    ``skipped``: finished by an earlier run; ``failed``: failures recorded by this run (an input,
    or one window of it) in ``errors.jsonl``; ``clips``: embeddings written by this run; ``rows``:
    rows in ``index.jsonl`` after it; ``ignored``: files of the folder that are not videos.
    """

    out_dir: Path
    inputs: int
    done: int
    skipped: int
    failed: int
    clips: int
    rows: int
    seconds: float
    ignored: int = 0
    rank: int = 0
    world_size: int = 1

    @property
    def index_path(self) -> Path:
        return self.out_dir / "index.jsonl"

    @property
    def errors_path(self) -> Path:
        return self.out_dir / "errors.jsonl"

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """``embedded 12 clips from 10 videos, skipped 0 (already done), failed 3; 4.1 clips/s; ...``"""
        failed = f"failed {self.failed} (see {self.errors_path})" if self.failed else "failed 0"
        ignored = ("" if not self.ignored else "; 1 file that is not a video ignored" if self.ignored == 1
                   else f"; {self.ignored} files that are not videos ignored")
        return (f"embedded {self.clips} clips from {self.done} videos, skipped {self.skipped} (already done), "
                f"{failed}; {self.clips_per_second:.2f} clips/s; {self.rows} rows in {self.index_path}{ignored}")
