"""The model: sparse video tubes on a timm ViT + the MaMMUT two-pass decoder (DESIGN.md §2)."""

from __future__ import annotations

from typing import Any

from mammut_video.model.config import MammutVideoConfig, TextConfig, TubeSpec, VisionConfig
from mammut_video.model.mammut import MammutVideo, VideoOutput, create_model
from mammut_video.model.presets import get_preset, list_presets


def load_model(path: str, **kwargs: Any) -> MammutVideo:
    """Load a checkpoint directory written by ``model.save_pretrained`` (see ``mammut_video.checkpoint``)."""
    from mammut_video.checkpoint import load_model as _load_model

    return _load_model(path, **kwargs)


__all__ = [
    "MammutVideo", "MammutVideoConfig", "TextConfig", "TubeSpec", "VideoOutput", "VisionConfig",
    "create_model", "get_preset", "list_presets", "load_model",
]
