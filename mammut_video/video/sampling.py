"""Which frames of a clip to decode: uniform, random and fixed-rate sampling.

All functions work on frame indices in presentation order (index 0 = the first frame shown)
and, where time matters, on each frame's presentation timestamp in seconds relative to the
first frame. Both decoders (decord, PyAV) number frames the same way, so one list of
indices names the same pictures in either.

Definitions (``n`` frames in the selected segment, ``num_frames`` wanted):

- segment: ``start``/``end`` in seconds select the frames on screen during
  ``[start, end)``: from the frame on screen at ``start`` (the last one whose timestamp is
  ``<= start``) to the last frame whose timestamp is ``< end``. No start/end = whole clip.
- ``uniform``: cut the segment into ``num_frames`` equal runs of frames and take the
  centre of each: ``i0 + floor((k + 0.5) * n / num_frames)``. Deterministic (evaluation).
- ``random``: the same runs, one frame drawn uniformly inside each run (training; draws
  from ``generator``). Runs shorter than one frame collapse onto a single frame.
- ``fps``: the frames on screen at ``start + k / fps`` for ``k = 0 .. num_frames - 1``;
  timestamps past the segment's last frame repeat that frame.

When the segment holds fewer than ``num_frames`` frames, uniform and random repeat frames
(each index appears ``~num_frames / n`` times, in order) rather than fail.
"""

from __future__ import annotations

import numpy as np
import torch

from mammut_video.errors import ConfigError, check_segment

SAMPLING_MODES = ("uniform", "random", "fps")

# tolerance when comparing a requested time with frame timestamps: far below any frame
# duration, above float32 rounding of timestamps up to a few hours
_EPS = 1e-4


class SegmentOutsideClip(ValueError):
    """The requested ``start``/``end`` select no frame of this clip."""


def check_sampling_args(
    num_frames: int,
    sampling: str,
    fps: float | None,
    start: float | None,
    end: float | None,
) -> None:
    """Raise ``ValueError`` for arguments that are wrong whatever the file."""
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ConfigError(f"num_frames must be a positive int, got {num_frames!r}")
    if sampling not in SAMPLING_MODES:
        raise ConfigError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
    if sampling == "fps" and (fps is None or not fps > 0):
        raise ConfigError(f"sampling='fps' needs a positive fps=, got {fps!r}")
    if sampling != "fps" and fps is not None:
        raise ConfigError(f"fps= is only used with sampling='fps' (got sampling={sampling!r})")
    check_segment(start, end)


def needs_timestamps(sampling: str, start: float | None, end: float | None) -> bool:
    """Whether ``sample_indices`` needs frame timestamps for these arguments."""
    return sampling == "fps" or start is not None or end is not None


def segment_bounds(
    timestamps: np.ndarray, start: float | None, end: float | None, frame_duration: float
) -> tuple[int, int]:
    """Frame range ``[i0, i1)`` on screen during ``[start, end)``.

    Args:
        timestamps: float (n,) ascending presentation times in seconds, first frame at 0.
        frame_duration: seconds one frame stays on screen (1 / native fps), to tell
            whether ``start`` lies past the last frame.
    """
    n = len(timestamps)
    i0, i1 = 0, n
    if start is not None:
        if start >= timestamps[-1] + frame_duration - _EPS:
            raise SegmentOutsideClip(
                f"segment start {start:.3f} s is past the end of the clip "
                f"({timestamps[-1] + frame_duration:.3f} s, {n} frames)")
        i0 = max(int(np.searchsorted(timestamps, start + _EPS, side="right")) - 1, 0)
    if end is not None:
        i1 = max(int(np.searchsorted(timestamps, end - _EPS, side="left")), i0 + 1)
    return i0, i1


def sample_indices(
    num_available: int,
    num_frames: int,
    sampling: str = "uniform",
    *,
    timestamps: np.ndarray | None = None,
    frame_duration: float | None = None,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Pick ``num_frames`` frame indices out of ``num_available`` (see module docstring).

    Args:
        num_available: frames in the clip (>= 1).
        timestamps: float (num_available,) presentation times in seconds relative to the
            first frame; needed when ``needs_timestamps(sampling, start, end)``.
        frame_duration: seconds per frame; defaults to the median timestamp step.
        generator: random source for ``sampling="random"`` (torch's default when None).

    Returns:
        int64 (num_frames,) indices into the clip, non-decreasing.

    Raises:
        ValueError: bad arguments. ``SegmentOutsideClip`` (a ValueError) when ``start`` is
            past the last frame.
    """
    check_sampling_args(num_frames, sampling, fps, start, end)
    if num_available < 1:
        raise ConfigError(f"the clip has no frames (num_available={num_available})")
    i0, i1 = 0, num_available
    if needs_timestamps(sampling, start, end):
        if timestamps is None or len(timestamps) != num_available:
            raise ConfigError("timestamps of every frame are needed for sampling='fps' or start/end")
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if frame_duration is None:
            frame_duration = float(np.median(np.diff(timestamps))) if num_available > 1 else 0.0
        i0, i1 = segment_bounds(timestamps, start, end, frame_duration)
    n = i1 - i0

    k = np.arange(num_frames, dtype=np.float64)
    if sampling == "uniform":
        return i0 + np.floor((k + 0.5) * n / num_frames).astype(np.int64)
    if sampling == "random":
        lo = np.floor(k * n / num_frames).astype(np.int64)
        hi = np.maximum(np.floor((k + 1) * n / num_frames).astype(np.int64), lo + 1)
        u = torch.rand(num_frames, generator=generator, dtype=torch.float64).numpy()
        return i0 + np.minimum(lo + np.floor(u * (hi - lo)).astype(np.int64), hi - 1)
    # fps: the frame on screen at each requested time, clamped to the segment
    assert timestamps is not None and fps is not None
    times = (start or 0.0) + k / fps
    idx = np.searchsorted(timestamps, times + _EPS, side="right") - 1
    return np.clip(idx, i0, i1 - 1).astype(np.int64)
