"""Video input: decoding (decord, PyAV), frame sampling, clip transforms, synthetic clips."""

from mammut_video.video.synthetic import moving_pattern, write_clip

__all__ = ["moving_pattern", "write_clip"]
