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

Completeness check (both backends and ``probe_video``, one function: ``_check_complete``).
FFmpeg's demuxers skip damaged data and stop quietly at a cut, so a broken file can yield a
plausible-looking subset of its frames. Before decoding, what is readable (the packet
count, each frame's timestamp) is compared with what the container header declares, read
with PyAV without demuxing (decord path: ~1-3 ms per real clip, 1-3 % of a 32-frame read):

- a listed frame count (mp4/mov sample tables, AVI headers): fewer readable frames than
  listed raises, unless the missing ones are "drop frames" (empty AVI chunks the header
  counts: the readable timestamps still reach the listed end, and no bytes are skipped).
  When every listed frame is there, nothing else is checked;
- a declared duration of the video stream (mp4/mov/AVI stream header, the Matroska/WebM
  track's DURATION tag, or the segment duration when the file has no other stream): the
  last readable frame must end no more than max(0.5 s, 20 %) before it ("truncated");
- Matroska/WebM and AVI demuxers resynchronise past damaged bytes: when the timestamps
  show a gap (a step over 1.5x the median frame step) or fewer frames than duration x
  rate, every stream is demuxed with PyAV and a run of >= 4 KiB (and >= 0.1 % of the file,
  capped at 1 MiB) between packets that no packet covers raises ("corrupt"). Gaps alone
  are not evidence: variable-frame-rate clips have them and pass;
- PyAV path only: a decoded frame at or after the first wanted one that the decoder flags
  ``is_corrupt`` raises (h264 and mpeg4 flag the frames whose errors they concealed; the
  VP9 decoder flags nothing; no real or synthetic test clip has a flagged frame). decord
  exposes no such flag.

Not detected: damage inside the compressed data of frames whose packets are all present
(flipped bits within a frame, with the container intact). Neither backend can see it from
the container; the decoder conceals it, decord returns the concealed frame, and PyAV
raises only when the decoder flags the frame (h264, mpeg4; never VP9). Also not detected:
a cut in a container that declares neither a frame count nor a duration (MPEG-TS, raw
streams, live WebM without a Duration element), a cut losing less than max(0.5 s, 20 %)
of a Matroska/WebM file, and in those formats damage that leaves no 4 KiB hole.
``probe_video`` reads no frame data, so it misses damage confined to frame data (e.g. an
mp4 whose index is intact and whose samples are flipped); ``read_clip`` then fails while
decoding (decord and PyAV both raise on the test case).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from mammut_video.video.errors import VideoDecodeError
from mammut_video.video.sampling import (
    SegmentOutsideClip,
    check_sampling_args,
    needs_timestamps,
    sample_indices,
)

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


def _check_file(path: str | os.PathLike[str]) -> str:
    """The path as a str, after the checks that need no decoder."""
    name = os.fspath(path)
    if os.path.isdir(name):
        raise VideoDecodeError(name, "is a directory, not a video file")
    try:
        size = os.path.getsize(name)
    except OSError as e:
        raise VideoDecodeError(name, f"no such file ({e.strerror})" if isinstance(e, FileNotFoundError)
                               else f"cannot stat file ({e})") from None
    if size == 0:
        raise VideoDecodeError(name, "empty file (0 bytes)")
    return name


_DECORD_PREFIX = re.compile(r"^(\[[\d:]+\] \S+:\d+: )+")


def _cause(backend: str, err: BaseException) -> str:
    """One readable line from a backend exception (decord appends a C++ stack trace)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = _DECORD_PREFIX.sub("", text)
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)
    return f"{backend}: {text}"


def _decord() -> Any | None:
    try:
        import decord
    except ImportError:
        return None
    return decord


# --------------------------------------------------------------------------- completeness

# the last frame may end this much before the declared duration (seconds, fraction of it)
_END_SLACK_S, _END_SLACK_FRACTION = 0.5, 0.2
# a step between frames longer than this times the median step makes the file suspect
_GAP_FACTOR = 1.5
# a run of bytes no packet covers counts as damage when at least this long
_HOLE_MIN_BYTES, _HOLE_FILE_FRACTION, _HOLE_CAP_BYTES = 4096, 0.001, 1 << 20


@dataclass(frozen=True)
class _Declared:
    """What the container header says about the video stream (read without demuxing)."""

    frames: int  # frame count the header lists; 0 when it lists none (mkv, webm)
    duration: float | None  # seconds of video the header declares
    duration_source: str  # where ``duration`` comes from, for messages
    rate: float | None  # average frame rate
    resyncs: bool  # the demuxer skips damaged bytes silently (mkv/webm, AVI)


def _tag_seconds(metadata: dict[str, str]) -> float | None:
    """A Matroska track's DURATION tag ("HH:MM:SS.nnnnnnnnn") in seconds, or None."""
    for key, value in metadata.items():
        if key.upper() == "DURATION" or key.upper().startswith("DURATION-"):
            match = re.fullmatch(r"\s*(\d+):(\d\d):(\d\d(?:\.\d*)?)\s*", value)
            if match:
                h, m, sec = match.groups()
                return int(h) * 3600 + int(m) * 60 + float(sec)
    return None


def _declared(container: Any, stream: Any) -> _Declared:
    """Frame count, duration and rate of the video stream as its header states them.

    Durations are taken only where the muxer writes them (FFmpeg estimates others from
    the bit rate): mp4/mov/AVI stream headers and Matroska's per-track DURATION tag (FFmpeg
    rewrites it on remux, unlike the copied NUMBER_OF_FRAMES statistics tag, which is
    ignored); the Matroska segment duration covers every track, so it is used only when
    the file has no other stream.
    """
    names = set(container.format.name.split(","))
    matroska = bool(names & {"matroska", "webm"})
    duration, source = None, ""
    if matroska:
        duration = _tag_seconds(stream.metadata)
        source = "the track's DURATION tag"
        if duration is None and len(container.streams) == 1 and container.duration:
            duration, source = container.duration / 1_000_000, "the segment header"
    elif names & {"mov", "mp4", "avi"} and stream.duration and stream.time_base:
        duration, source = float(stream.duration * stream.time_base), "the stream header"
    rate = _frame_rate(stream)
    return _Declared(frames=max(int(stream.frames or 0), 0), duration=duration or None,
                     duration_source=source, rate=float(rate) if rate else None,
                     resyncs=matroska or "avi" in names)


# FFmpeg's stream probing decodes frames (12 ms on a 720p clip); the fields read here come
# from the header alone (checked identical on every test clip), so probe almost nothing
_HEADER_ONLY = {"probesize": "32", "analyzeduration": "0"}


def _read_declared(path: str, backend: str) -> _Declared:
    """``_declared`` for a file, opening it with PyAV without probing or demuxing.

    Formats whose streams appear only in the packets (MPEG-TS) are opened again with
    FFmpeg's default probing.
    """
    import av

    try:
        with av.open(path, metadata_errors="ignore", options=_HEADER_ONLY) as container:
            if container.streams.video:
                return _declared(container, container.streams.video[0])
    except _pyav_errors():
        pass
    try:
        with av.open(path, metadata_errors="ignore") as container:
            return _declared(container, _open_video_stream(container, path))
    except VideoDecodeError:
        raise
    except _pyav_errors() as e:
        raise VideoDecodeError(path, f"{backend}: reading the container header failed "
                                     f"({_cause('pyav', e)})") from e


def _largest_hole(path: str) -> tuple[int, int]:
    """(offset, length) of the longest run of bytes between two packets that no packet of
    any stream covers; (0, 0) when the packets tile the file.

    Laced Matroska frames share their block's position, so sizes are summed per position.
    """
    import av

    spans: dict[int, int] = {}
    with av.open(path, metadata_errors="ignore") as container:
        for packet in container.demux():
            pos = packet.pos
            if packet.size and pos is not None and pos >= 0:
                spans[pos] = spans.get(pos, 0) + packet.size
    best, covered_to = (0, 0), None
    for pos in sorted(spans):
        if covered_to is not None and pos - covered_to > best[1]:
            best = (covered_to, pos - covered_to)
        end = pos + spans[pos]
        covered_to = end if covered_to is None else max(covered_to, end)
    return best


def _usable_times(times: np.ndarray | None) -> bool:
    """Whether frame timestamps (s) are real ones: finite, ordered, not all equal."""
    if times is None or len(times) == 0:
        return False
    if not np.all(np.isfinite(times)) or np.abs(times).max() > 1e7:  # ~115 days
        return False
    return len(times) == 1 or bool(np.all(np.diff(times) >= 0) and times[-1] > times[0])


def _check_complete(path: str, backend: str, declared: _Declared, num_frames: int,
                    times: np.ndarray | None, end: float | None) -> None:
    """Raise ``VideoDecodeError`` when fewer frames are readable than the header declares.

    Args:
        num_frames: video frames the backend can index (non-empty packets).
        times: sorted presentation times (s) of those frames from the stream's start, or
            None when unknown; ``end``: when the last one stops showing (same origin).
    """
    rate = declared.rate
    if not _usable_times(times):
        times = None
    if end is not None and not (math.isfinite(end) and abs(end) < 1e7):
        end = None

    def hole_error() -> VideoDecodeError | None:
        size = os.path.getsize(path)
        try:
            offset, length = _largest_hole(path)
        except _pyav_errors() as e:
            return VideoDecodeError(path, f"{backend}: corrupt file: demuxing every stream "
                                          f"failed ({_cause('pyav', e)})")
        if length >= max(_HOLE_MIN_BYTES, min(_HOLE_CAP_BYTES, _HOLE_FILE_FRACTION * size)):
            return VideoDecodeError(
                path, f"{backend}: corrupt file: {length} bytes at offset {offset} hold no "
                      f"packet the demuxer could read (damaged data skipped; {num_frames} "
                      f"frames readable)")
        return None

    listed = declared.frames
    if listed:
        if num_frames >= listed:
            return
        # AVI counts empty "drop frame" chunks, which carry no picture: fine when the
        # readable frames still reach the listed end and no bytes were skipped
        slots = round(end * rate) if end is not None and rate else None
        if slots is None or slots < listed - 1 - listed // 100:
            reach = f" (they end at {end:.2f} s of {listed / rate:.2f} s)" if slots is not None else ""
            raise VideoDecodeError(path, f"{backend}: truncated or corrupt file: the header lists "
                                         f"{listed} frames, only {num_frames} are readable{reach}")
        error = hole_error() if declared.resyncs else None
        if error is not None:
            raise error
        return

    duration = declared.duration
    if duration is not None and end is not None:
        if end < duration - max(_END_SLACK_S, _END_SLACK_FRACTION * duration):
            raise VideoDecodeError(path, f"{backend}: truncated file: {declared.duration_source} "
                                         f"declares {duration:.2f} s of video, the readable "
                                         f"frames end at {end:.2f} s")
    if not declared.resyncs:
        return
    suspect = bool(duration and rate and num_frames < 0.9 * duration * rate)
    if times is not None and len(times) >= 3:
        steps = np.diff(times)
        typical = float(np.median(steps))
        suspect = suspect or (typical > 0 and float(steps.max()) > _GAP_FACTOR * typical)
    if suspect:
        error = hole_error()
        if error is not None:
            raise error


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
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
        n = len(reader)
        if n < 1:
            raise VideoDecodeError(path, "decord: the video stream has no frames")
        declared = _read_declared(path, "decord")
        times = None  # (n, 2) start/end of each frame in s from the stream start
        if n < declared.frames or not declared.frames or needs_timestamps(sampling, start, end):
            times = reader.get_frame_timestamp(np.arange(n)).astype(np.float64)
            # without a stream start time decord returns ~9.2e15 s (pts minus AV_NOPTS_VALUE)
            if not _usable_times(times[:, 0]):
                times = None
        _check_complete(path, "decord", declared, n, None if times is None else times[:, 0],
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
        raise VideoDecodeError(path, _cause("decord", e)) from e
    if inverse is not None:
        clip = clip[torch.from_numpy(inverse.reshape(-1))]
    return clip


# --------------------------------------------------------------------------- PyAV


def _pyav_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError, ValueError, EOFError, RuntimeError, MemoryError)


def _open_video_stream(container: Any, path: str) -> Any:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
    return container.streams.video[0]


def _frame_rate(stream: Any) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


class _PacketIndex:
    """The video packets of a stream in decode order, with presentation order worked out.

    ``timestamps[i]`` is the presentation time (s, from the first frame) of frame ``i``;
    ``index_of_pts`` maps a frame's pts to its index. When some packet has no pts (rare,
    e.g. some AVI files) frames are numbered by decode output order instead.
    """

    def __init__(self, packets: list[Any], stream: Any) -> None:
        self.packets = packets
        rate = _frame_rate(stream)
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
    declared = _declared(container, stream)
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
    _check_complete(path, "pyav", declared, len(packets), times, end)
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
            stream = _open_video_stream(container, path)
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
    except _pyav_errors() as e:
        raise VideoDecodeError(path, _cause("pyav", e)) from e
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
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    name = _check_file(path)
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
            raise VideoDecodeError(name, f"{second.cause} (and {first.cause})") from second


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Duration, native fps, frame count and size of a file's first video stream.

    Reads the container and counts the video packets (no decoding), so ``num_frames``
    agrees with what ``read_clip`` can index.

    Raises:
        VideoDecodeError: as for ``read_clip``.
    """
    import av

    name = _check_file(path)
    try:
        with av.open(name, metadata_errors="ignore") as container:
            stream = _open_video_stream(container, name)
            width, height = stream.codec_context.width, stream.codec_context.height
            rate = _frame_rate(stream)
            index = _demux(container, stream, name)
    except VideoDecodeError:
        raise
    except _pyav_errors() as e:
        raise VideoDecodeError(name, _cause("pyav", e)) from e
    n = len(index)
    if n < 1:
        raise VideoDecodeError(name, "pyav: the video stream has no frames")
    frame_duration = index.frame_duration or 0.0
    duration = float(index.timestamps[-1]) + frame_duration
    native = float(rate) if rate else (n / duration if duration > 0 else 0.0)
    return VideoInfo(duration=duration, fps=native, num_frames=n, width=width, height=height)
