"""Video input: decoding (decord, PyAV), frame sampling, clip transforms, synthetic clips.

    clip = read_clip("a.mp4", num_frames=32)                 # uint8 (T, H, W, 3)
    x = build_clip_transform(224, CLIP_MEAN, CLIP_STD, train=False)(clip)  # float (3, T, 224, 224)
"""

from mammut_video.video.decode import BACKENDS, VideoInfo, probe_video, read_clip
from mammut_video.video.errors import VideoDecodeError
from mammut_video.video.sampling import SAMPLING_MODES, sample_indices
from mammut_video.video.synthetic import moving_pattern, write_clip

__all__ = [
    "BACKENDS",
    "SAMPLING_MODES",
    "VideoDecodeError",
    "VideoInfo",
    "moving_pattern",
    "probe_video",
    "read_clip",
    "sample_indices",
    "write_clip",
]
