"""What a video file's container declares, and whether the readable frames match it.

Shared by both decoders in :mod:`mammut_video.video.decode` and by ``probe_video``: the checks
that need no decoder (:func:`check_file`), the PyAV header helpers, the one-line cause of a
backend exception, and the completeness check.

Completeness check (both backends and ``probe_video``, one function: ``check_complete``).
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
  last readable frame must end no more than max(0.5 s, 20 %) before it ("truncated", or
  "corrupt" when the file has a hole as described next: a demuxer may stop at damage);
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

from mammut_video.video.errors import VideoDecodeError


def check_file(path: str | os.PathLike[str]) -> str:
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


def error_cause(backend: str, err: BaseException) -> str:
    """One readable line from a backend exception (decord appends a C++ stack trace)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = _DECORD_PREFIX.sub("", text)
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)
    return f"{backend}: {text}"


def pyav_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError, ValueError, EOFError, RuntimeError, MemoryError)


def open_video_stream(container: Any, path: str) -> Any:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
    return container.streams.video[0]


def frame_rate(stream: Any) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None



# the last frame may end this much before the declared duration (seconds, fraction of it)
_END_SLACK_S, _END_SLACK_FRACTION = 0.5, 0.2
# a step between frames longer than this times the median step makes the file suspect
_GAP_FACTOR = 1.5
# a run of bytes no packet covers counts as damage when at least this long
_HOLE_MIN_BYTES, _HOLE_FILE_FRACTION, _HOLE_CAP_BYTES = 4096, 0.001, 1 << 20


@dataclass(frozen=True)
class Declared:
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


def declared_by(container: Any, stream: Any) -> Declared:
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
    rate = frame_rate(stream)
    return Declared(frames=max(int(stream.frames or 0), 0), duration=duration or None,
                     duration_source=source, rate=float(rate) if rate else None,
                     resyncs=matroska or "avi" in names)


# FFmpeg's stream probing decodes frames (12 ms on a 720p clip); the fields read here come
# from the header alone (checked identical on every test clip), so probe almost nothing
_HEADER_ONLY = {"probesize": "32", "analyzeduration": "0"}


def read_declared(path: str, backend: str) -> Declared:
    """``declared_by`` for a file, opening it with PyAV without probing or demuxing.

    Formats whose streams appear only in the packets (MPEG-TS) are opened again with
    FFmpeg's default probing.
    """
    import av

    try:
        with av.open(path, metadata_errors="ignore", options=_HEADER_ONLY) as container:
            if container.streams.video:
                return declared_by(container, container.streams.video[0])
    except pyav_errors():
        pass
    try:
        with av.open(path, metadata_errors="ignore") as container:
            return declared_by(container, open_video_stream(container, path))
    except VideoDecodeError:
        raise
    except pyav_errors() as e:
        raise VideoDecodeError(path, f"{backend}: reading the container header failed "
                                     f"({error_cause('pyav', e)})") from e


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


def usable_times(times: np.ndarray | None) -> bool:
    """Whether frame timestamps (s) are real ones: finite, ordered, not all equal."""
    if times is None or len(times) == 0:
        return False
    if not np.all(np.isfinite(times)) or np.abs(times).max() > 1e7:  # ~115 days
        return False
    return len(times) == 1 or bool(np.all(np.diff(times) >= 0) and times[-1] > times[0])


def check_complete(path: str, backend: str, declared: Declared, num_frames: int,
                    times: np.ndarray | None, end: float | None) -> None:
    """Raise ``VideoDecodeError`` when fewer frames are readable than the header declares.

    Args:
        num_frames: video frames the backend can index (non-empty packets).
        times: sorted presentation times (s) of those frames from the stream's start, or
            None when unknown; ``end``: when the last one stops showing (same origin).
    """
    rate = declared.rate
    if not usable_times(times):
        times = None
    if end is not None and not (math.isfinite(end) and abs(end) < 1e7):
        end = None

    def raise_if_hole() -> None:
        """Raise "corrupt" when a demuxer that resyncs skipped a run of damaged bytes."""
        if not declared.resyncs:
            return
        size = os.path.getsize(path)
        try:
            offset, length = _largest_hole(path)
        except pyav_errors() as e:
            raise VideoDecodeError(path, f"{backend}: corrupt file: demuxing every stream "
                                         f"failed ({error_cause('pyav', e)})") from e
        if length >= max(_HOLE_MIN_BYTES, min(_HOLE_CAP_BYTES, _HOLE_FILE_FRACTION * size)):
            raise VideoDecodeError(
                path, f"{backend}: corrupt file: {length} bytes at offset {offset} hold no "
                      f"packet the demuxer could read (damaged data skipped; {num_frames} "
                      f"frames readable)")

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
        raise_if_hole()
        return

    duration = declared.duration
    if duration is not None and end is not None:
        if end < duration - max(_END_SLACK_S, _END_SLACK_FRACTION * duration):
            # a demuxer may also stop at damage mid-file (decord's index of a bit-flipped
            # mkv can end there): a hole means corrupt, not cut
            raise_if_hole()
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
        raise_if_hole()
