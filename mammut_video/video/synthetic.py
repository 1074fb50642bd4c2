"""Write clips with PyAV: synthetic test videos for tests, benchmarks and demos.

``write_clip`` encodes a uint8 array of frames to a file whose container and codec follow
the extension. ``moving_pattern`` makes frames whose content identifies the frame index, so
a test can check which frame a decoder returned.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mammut_video.errors import ConfigError

# extension -> codecs to try, in order of preference
_CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("libx264", "mpeg4"),
    ".mkv": ("libx264", "mpeg4"),
    ".mov": ("libx264", "mpeg4"),
    ".m4v": ("libx264", "mpeg4"),
    ".avi": ("mpeg4",),
    ".webm": ("libvpx-vp9", "libvpx"),
}


def _available(codec: str) -> bool:
    import av

    try:
        av.codec.Codec(codec, "w")
    except Exception:  # av raises UnknownCodecError (a ValueError) or FFmpegError
        return False
    return True


def default_codec(path: str | os.PathLike[str]) -> str:
    """The encoder ``write_clip`` uses for ``path``'s extension (first one PyAV has)."""
    ext = Path(path).suffix.lower()
    if ext not in _CODECS:
        raise ConfigError(f"cannot choose a codec for {str(path)!r}: unknown extension {ext!r} "
                         f"(known: {', '.join(sorted(_CODECS))}; or pass codec=)")
    for codec in _CODECS[ext]:
        if _available(codec):
            return codec
    raise ConfigError(f"no encoder for {str(path)!r}: PyAV has none of {', '.join(_CODECS[ext])}")


def _as_rate(fps: float | Fraction) -> Fraction:
    """Exact frame rate: NTSC-style rates (23.976, 29.97, 59.94) become N*1000/1001."""
    if isinstance(fps, Fraction):
        return fps
    ntsc = round(fps * 1.001)
    if abs(fps - ntsc * 1000 / 1001) < 5e-3 and abs(fps - round(fps)) > 1e-6:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def write_clip(
    path: str | os.PathLike[str],
    frames: Any,
    fps: float | Fraction,
    codec: str | None = None,
    *,
    gop: int | None = None,
    crf: int = 18,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Encode ``frames`` to ``path`` with PyAV.

    Args:
        path: output file; the extension picks the container and, unless ``codec`` is
            given, the codec: .mp4/.mkv/.mov/.m4v -> h264 (libx264, else mpeg4),
            .avi -> mpeg4, .webm -> vp9 (libvpx-vp9, else vp8).
        frames: uint8 array or tensor (T, H, W, 3), RGB. H and W must be even (yuv420p).
        fps: frame rate; a float such as 23.976 is turned into a close fraction
            (23.976 -> 24000/1001) so timestamps are exact.
        codec: an FFmpeg encoder name, overriding the extension's choice.
        gop: keyframe interval in frames (encoder default when None).
        crf: quality for libx264 / libvpx (lower is better; 18 is visually lossless).
        pix_fmt: stored pixel format, e.g. "yuv444p" or 10-bit "yuv420p10le" (libx264).

    Returns:
        ``Path(path)``.
    """
    import av

    if hasattr(frames, "detach"):  # torch tensor
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(f"write_clip({str(path)!r}): frames must be uint8 (T, H, W, 3), "
                         f"got {frames.dtype} {tuple(frames.shape)}")
    t, h, w, _ = frames.shape
    if t == 0 or h % 2 or w % 2:
        raise ConfigError(f"write_clip({str(path)!r}): need T > 0 and even H, W, got {(t, h, w)}")
    codec = codec or default_codec(path)
    rate = _as_rate(fps)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, str] = {}
    if codec in ("libx264", "libvpx-vp9", "libvpx"):
        options["crf"] = str(crf)
    if codec == "libvpx-vp9":
        options.update({"b:v": "0", "deadline": "realtime", "cpu-used": "8"})
    if codec == "libx264":
        options["preset"] = "veryfast"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if codec == "mpeg4":
            stream.bit_rate = max(1_000_000, h * w * 30)
        if gop is not None:
            stream.codec_context.gop_size = gop
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=pix_fmt)
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_pattern(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Frames that differ clearly from one another, for decode tests and benchmarks.

    Returns:
        uint8 (num_frames, height, width, 3): a colour gradient; 8 vertical stripes, stripe
        ``b`` raised by 100 when bit ``b`` of ``i % 256`` is set (so any two of 256
        consecutive frames differ by >= ~12 in mean absolute value, far above codec noise);
        and a square that moves with the frame index.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1),
                     np.full_like(xx, rng.uniform(0.2, 0.8))], axis=-1) * 100
    stripe = np.minimum((np.arange(width) * 8) // width, 7)  # stripe number of each column
    out = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 4)
    for i in range(num_frames):
        bits = (((i % 256) >> stripe) & 1).astype(np.float32) * 100
        frame = base + bits[None, :, None]
        y = (i * 7) % max(height - side, 1)
        x = (i * 13) % max(width - side, 1)
        frame[y:y + side, x:x + side] = 20 + (i * 37) % 235
        out[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return out
