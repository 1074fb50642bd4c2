"""Decode clips with decord or PyAV: ``read_clip`` and ``probe_video``.

Both backends number frames in presentation order, one per video packet, and convert to
RGB with FFmpeg's default swscale path, so the same indices give identical frames (checked
bit-exact on the real test clips). ``backend="auto"`` uses decord (fast random access:
it seeks to the keyframe before each wanted frame) and falls back to PyAV when decord is
missing or fails on a file. The PyAV path demuxes the whole video stream once (packets are
compressed, so this holds roughly the file size in memory), then decodes sequentially from
the keyframe before the first wanted frame, keeping only the wanted frames: one seek at
most, never one per frame.

Every failure that depends on the file raises ``VideoDecodeError`` naming the path.

Whether a file holds what its container header declares (truncated or corrupt files) is
checked by :mod:`mammut_video.video.container` before anything is decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mammut_video._native import native_stderr_silenced
from mammut_video.errors import ConfigError
from mammut_video.video.container import (
    check_complete,
    check_file,
    declared_by,
    error_cause,
    frame_rate,
    open_video_stream,
    pyav_errors,
    read_declared,
    usable_times,
)
from mammut_video.video.errors import VideoDecodeError
from mammut_video.video.sampling import SegmentOutsideClip, check_sampling_args, needs_timestamps, sample_indices

BACKENDS = ("auto", "decord", "pyav")


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` reports about a file's first video stream.

    Attributes:
        duration: seconds from the first frame's timestamp to the end of the last frame.
        fps: native frame rate (the stream's average rate).
        num_frames: frames in the stream (counted from the packets, not a header guess).
        width, height: frame size in pixels.
    """

    duration: float
    fps: float
    num_frames: int
    width: int
    height: int


def _decord() -> Any | None:
    try:
        import decord
    except ImportError:
        return None
    decord.logging.set_level(decord.logging.QUIET)  # FFmpeg's own lines ("moov atom not found")
    return decord


# --------------------------------------------------------------------------- decord


def _read_decord(
    path: str,
    num_frames: int,
    sampling: str,
    fps: float | None,
    start: float | None,
    end: float | None,
    generator: torch.Generator | None,
    num_threads: int,
) -> torch.Tensor:
    decord = _decord()
    if decord is None:
        raise VideoDecodeError(path, "decord is not installed (pip install decord, or use backend='pyav')")
    try:
        with native_stderr_silenced():
            reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
        n = len(reader)
        if n < 1:
            raise VideoDecodeError(path, "decord: the video stream has no frames")
        declared = read_declared(path, "decord")
        times = None  # (n, 2) start/end of each frame in s from the stream start
        if n < declared.frames or not declared.frames or needs_timestamps(sampling, start, end):
            times = reader.get_frame_timestamp(np.arange(n)).astype(np.float64)
            # without a stream start time decord returns ~9.2e15 s (pts minus AV_NOPTS_VALUE)
            if not usable_times(times[:, 0]):
                times = None
        check_complete(path, "decord", declared, n, None if times is None else times[:, 0],
                        None if times is None else float(times[-1, 1]))
        timestamps = frame_duration = None
        if needs_timestamps(sampling, start, end):
            if times is None:
                raise VideoDecodeError(path, "decord: the frame timestamps are unusable (no stream "
                                             "start time); backend='pyav' or 'auto' reads them")
            timestamps = times[:, 0] - times[0, 0]
            native = reader.get_avg_fps()
            frame_duration = 1.0 / native if native > 0 else None
        idx = sample_indices(n, num_frames, sampling, timestamps=timestamps,
                             frame_duration=frame_duration, fps=fps, start=start, end=end,
                             generator=generator)
        repeats = bool(np.any(idx[1:] == idx[:-1]))
        wanted, inverse = np.unique(idx, return_inverse=True) if repeats else (idx, None)
        batch = reader.get_batch(wanted)
        # dlpack hands decord's buffer to torch without a copy and without touching
        # decord's global bridge setting
        clip = torch.utils.dlpack.from_dlpack(batch.to_dlpack())
        del reader, batch
    except VideoDecodeError:
        raise
    except SegmentOutsideClip as e:
        raise VideoDecodeError(path, str(e)) from None
    except (decord.DECORDError, RuntimeError, ValueError, IndexError, OSError) as e:
        raise VideoDecodeError(path, error_cause("decord", e)) from e
    if inverse is not None:
        clip = clip[torch.from_numpy(inverse.reshape(-1))]
    return clip


# --------------------------------------------------------------------------- PyAV


class _PacketIndex:
    """The video packets of a stream in decode order, with presentation order worked out.

    ``timestamps[i]`` is the presentation time (s, from the first frame) of frame ``i``;
    ``index_of_pts`` maps a frame's pts to its index. When some packet has no pts (rare,
    e.g. some AVI files) frames are numbered by decode output order instead.
    """

    def __init__(self, packets: list[Any], stream: Any) -> None:
        self.packets = packets
        rate = frame_rate(stream)
        self.frame_duration = float(1 / rate) if rate else None
        pts = [p.pts for p in packets]
        self.has_pts = all(p is not None for p in pts) and len(set(pts)) == len(pts)
        n = len(packets)
        if self.has_pts:
            self.sorted_pts = np.sort(np.asarray(pts, dtype=np.int64))
            self.index_of_pts = {int(p): i for i, p in enumerate(self.sorted_pts)}
            first = self.sorted_pts[0]
            self.timestamps = (self.sorted_pts - first).astype(np.float64) * float(stream.time_base)
            if self.frame_duration is None and n > 1:
                self.frame_duration = float(np.median(np.diff(self.timestamps)))
        else:
            self.sorted_pts = np.zeros(0, dtype=np.int64)
            self.index_of_pts = {}
            self.timestamps = np.arange(n, dtype=np.float64) * (self.frame_duration or 1.0)

    def __len__(self) -> int:
        return len(self.packets)

    def start_packet(self, first_index: int) -> int:
        """Position of the last keyframe packet shown at or before frame ``first_index``.

        Decoding from there yields frame ``first_index`` and everything after it; without
        pts (frames numbered by output order) decoding must start at packet 0.
        """
        if not self.has_pts or first_index == 0:
            return 0
        target = self.sorted_pts[first_index]
        best = 0
        for pos, packet in enumerate(self.packets):
            if packet.is_keyframe and packet.pts <= target:
                best = pos
        return best


def _demux(container: Any, stream: Any, path: str) -> _PacketIndex:
    """All video packets; raises when the file holds fewer than its header declares."""
    declared = declared_by(container, stream)
    packets = [p for p in container.demux(stream) if p.size > 0]
    if packets and packets[-1].is_corrupt:
        raise VideoDecodeError(path, f"pyav: truncated file: video packet {len(packets)} is incomplete")
    index = _PacketIndex(packets, stream)
    times = end = None
    if index.has_pts and packets:
        origin = int(index.sorted_pts[0])
        if stream.start_time is not None:
            origin = min(origin, int(stream.start_time))
        times = (index.sorted_pts - origin).astype(np.float64) * float(stream.time_base)
        end = float(times[-1]) + (index.frame_duration or 0.0)
    check_complete(path, "pyav", declared, len(packets), times, end)
    return index


def _decode_frames(path: str, stream: Any, index: _PacketIndex, wanted: np.ndarray) -> dict[int, np.ndarray]:
    """Decode sequentially from the keyframe before ``wanted[0]``; keep frames in ``wanted``.

    Returns {frame index: uint8 (H, W, 3)}; raises when any wanted frame never comes.
    """
    need = set(int(i) for i in wanted)
    first = int(wanted.min())
    pos = index.start_packet(first)
    frames: dict[int, np.ndarray] = {}
    counter = 0  # frames out of the decoder; numbers them when pts cannot

    def keep(frame: Any) -> None:
        nonlocal counter
        i = index.index_of_pts.get(frame.pts) if index.has_pts else counter
        counter += 1
        # concealed decoding errors, in a wanted frame or one the later wanted frames may
        # predict from (leading frames before ``first`` can be flagged just because
        # decoding started at a mid-stream keyframe of an open GOP)
        if frame.is_corrupt and i is not None and i >= first:
            raise VideoDecodeError(path, f"pyav: corrupt stream: the decoder flagged frame {i} "
                                         f"as damaged")
        if i is not None and i in need and i not in frames:
            frames[i] = frame.to_ndarray(format="rgb24")

    codec = stream.codec_context
    for packet in index.packets[pos:]:
        for frame in codec.decode(packet):
            keep(frame)
        if len(frames) == len(need):
            return frames
    for frame in codec.decode(None):  # drain the decoder's reorder buffer
        keep(frame)
    if len(frames) < len(need):
        missing = min(need - frames.keys())
        raise VideoDecodeError(
            path, f"pyav: the decoder stopped after {counter} frames without frame {missing} "
                  f"of the {len(index)} the container lists (truncated or corrupt stream)")
    return frames


def _read_pyav(
    path: str,
    num_frames: int,
    sampling: str,
    fps: float | None,
    start: float | None,
    end: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = open_video_stream(container, path)
            stream.thread_type = "AUTO"
            index = _demux(container, stream, path)
            if len(index) < 1:
                raise VideoDecodeError(path, "pyav: the video stream has no frames")
            idx = sample_indices(len(index), num_frames, sampling, timestamps=index.timestamps,
                                 frame_duration=index.frame_duration, fps=fps, start=start,
                                 end=end, generator=generator)
            frames = _decode_frames(path, stream, index, idx)
    except VideoDecodeError:
        raise
    except SegmentOutsideClip as e:
        raise VideoDecodeError(path, str(e)) from None
    except pyav_errors() as e:
        raise VideoDecodeError(path, error_cause("pyav", e)) from e
    return torch.from_numpy(np.stack([frames[int(i)] for i in idx]))


# --------------------------------------------------------------------------- public


def read_clip(
    path: str | os.PathLike[str],
    num_frames: int,
    *,
    sampling: str = "uniform",
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    backend: str = "auto",
    generator: torch.Generator | None = None,
    num_threads: int = 0,
) -> torch.Tensor:
    """Decode ``num_frames`` RGB frames from a video file.

    Frame choice (details in ``mammut_video.video.sampling``):

    - ``"uniform"``: the centre frame of each of ``num_frames`` equal parts of the clip
      (or of the ``start``/``end`` segment). Deterministic: use for evaluation.
    - ``"random"``: one random frame in each of those parts, drawn from ``generator``
      (training augmentation).
    - ``"fps"``: the frames on screen at ``start + k / fps`` seconds,
      ``k = 0 .. num_frames - 1``; times past the end repeat the last frame.

    Clips with fewer frames than ``num_frames`` repeat frames instead of failing.

    Args:
        path: video file (any container/codec FFmpeg reads).
        num_frames: frames to return (T).
        sampling: ``"uniform"``, ``"random"`` or ``"fps"``.
        fps: sampling rate in frames per second, for ``sampling="fps"`` only.
        start, end: segment in seconds from the first frame (None: clip start / end).
        backend: ``"auto"`` (decord, falling back to PyAV), ``"decord"`` or ``"pyav"``.
        generator: random source for ``sampling="random"``.
        num_threads: decord decoding threads (0: decord's default).

    Returns:
        uint8 tensor (T, H, W, 3), RGB, T = ``num_frames``.

    Raises:
        VideoDecodeError: the file is missing, empty, a directory, not a video, has no
            video stream, is truncated or corrupt, or the segment lies outside the clip.
        ValueError: invalid arguments (whatever the file).
    """
    check_sampling_args(num_frames, sampling, fps, start, end)
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    name = check_file(path)
    args = (name, num_frames, sampling, fps, start, end, generator)
    if backend == "pyav":
        return _read_pyav(*args)
    if backend == "decord":
        return _read_decord(*args, num_threads)
    if _decord() is None:
        return _read_pyav(*args)
    try:
        return _read_decord(*args, num_threads)
    except VideoDecodeError as first:
        try:
            return _read_pyav(*args)
        except VideoDecodeError as second:
            if second.cause == first.cause:  # the file's fault, not a backend's: say it once
                raise second from None
            raise VideoDecodeError(name, f"{second.cause} (and {first.cause})") from second


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Duration, native fps, frame count and size of a file's first video stream.

    Reads the container and counts the video packets (no decoding), so ``num_frames``
    agrees with what ``read_clip`` can index.

    Raises:
        VideoDecodeError: as for ``read_clip``.
    """
    import av

    name = check_file(path)
    try:
        with av.open(name, metadata_errors="ignore") as container:
            stream = open_video_stream(container, name)
            width, height = stream.codec_context.width, stream.codec_context.height
            rate = frame_rate(stream)
            index = _demux(container, stream, name)
    except VideoDecodeError:
        raise
    except pyav_errors() as e:
        raise VideoDecodeError(name, error_cause("pyav", e)) from e
    n = len(index)
    if n < 1:
        raise VideoDecodeError(name, "pyav: the video stream has no frames")
    frame_duration = index.frame_duration or 0.0
    duration = float(index.timestamps[-1]) + frame_duration
    native = float(rate) if rate else (n / duration if duration > 0 else 0.0)
    return VideoInfo(duration=duration, fps=native, num_frames=n, width=width, height=height)
