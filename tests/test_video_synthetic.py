"""write_clip: codec from the extension, exact frame rates, input checks."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from mammut_video.video import moving_pattern, write_clip
from mammut_video.video.synthetic import default_codec


@pytest.mark.parametrize("ext, codec", [
    ("mp4", "h264"), ("mkv", "h264"), ("mov", "h264"), ("m4v", "h264"), ("avi", "mpeg4"),
    ("webm", "vp9"),
])
def test_codec_follows_extension(tmp_path, ext, codec):
    path = write_clip(tmp_path / f"a.{ext}", moving_pattern(6, 32, 48), 12)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec
        assert (stream.codec_context.width, stream.codec_context.height) == (48, 32)
        assert sum(1 for _ in container.decode(stream)) == 6


def test_ntsc_rate_is_exact(tmp_path):
    path = write_clip(tmp_path / "ntsc.mp4", moving_pattern(4, 32, 32), 23.976)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == Fraction(24000, 1001)


def test_codec_override_and_errors(tmp_path):
    path = write_clip(tmp_path / "b.mkv", moving_pattern(3, 16, 16), 10, codec="mpeg4")
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    with pytest.raises(ValueError, match="unknown extension"):
        default_codec("clip.xyz")
    with pytest.raises(ValueError, match="uint8"):
        write_clip(tmp_path / "c.mp4", np.zeros((2, 16, 16, 3), np.float32), 10)
    with pytest.raises(ValueError, match="even"):
        write_clip(tmp_path / "d.mp4", np.zeros((2, 15, 16, 3), np.uint8), 10)


def test_moving_pattern_frames_differ():
    frames = moving_pattern(5, 32, 40)
    assert frames.shape == (5, 32, 40, 3) and frames.dtype == np.uint8
    diffs = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    assert (diffs > 10).all()
