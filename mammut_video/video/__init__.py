"""Video input: decoding (decord, PyAV), frame sampling, clip transforms, synthetic clips.

    clip = read_clip("a.mp4", num_frames=32)                                # uint8 (T, H, W, 3)
    x = build_clip_transform(224, CLIP_MEAN, CLIP_STD, train=False)(clip)  # float (3, T, 224, 224)

The transform names load torchvision on first use, so decoding alone stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from mammut_video.video.decode import BACKENDS, VideoInfo, probe_video, read_clip
from mammut_video.video.errors import VideoDecodeError
from mammut_video.video.normalization import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from mammut_video.video.sampling import SAMPLING_MODES, sample_indices
from mammut_video.video.synthetic import moving_pattern, write_clip

_TRANSFORM_NAMES = ("ClipTransform", "build_clip_transform")

__all__ = [
    "BACKENDS",
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAMPLING_MODES",
    "VideoDecodeError",
    "VideoInfo",
    "moving_pattern",
    "probe_video",
    "read_clip",
    "sample_indices",
    "write_clip",
    *_TRANSFORM_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _TRANSFORM_NAMES:
        value = getattr(importlib.import_module("mammut_video.video.transforms"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mammut_video.video' has no attribute {name!r}")
