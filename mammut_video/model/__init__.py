"""The model: sparse video tubes on a timm ViT + the MaMMUT two-pass decoder (docs/architecture.md)."""

from __future__ import annotations

from typing import Any

from mammut_video.model.config import MammutVideoConfig, TextConfig, TubeSpec, VisionConfig
from mammut_video.model.mammut import MammutVideo, VideoOutput, create_model
from mammut_video.model.presets import get_preset, list_presets


def load_model(path: str, **kwargs: Any) -> MammutVideo:
    """Load a checkpoint directory written by ``model.save_pretrained`` (see ``mammut_video.checkpoint``)."""
    from mammut_video.checkpoint import load_model as _load_model

    return _load_model(path, **kwargs)


def get_tokenizer(name_or_path: str) -> Any:
    """The tokenizer of a preset (by name) or of a checkpoint directory, without building the model.

    Rows are padded to the model's context length, as ``model.tokenizer`` pads them.
    """
    from pathlib import Path

    from mammut_video.text import build_tokenizer

    if Path(name_or_path).is_dir():
        from mammut_video.checkpoint import read_checkpoint_config

        model = read_checkpoint_config(name_or_path)["model"]
        spec, context = dict(model.get("tokenizer") or {}), (model.get("text") or {}).get("context_length")
        directory: str | None = name_or_path
    else:
        config = get_preset(name_or_path)
        spec, context, directory = dict(config.tokenizer), config.text.context_length, None
    if context is not None:
        spec["context_length"] = context
    return build_tokenizer(spec, directory=directory)


__all__ = [
    "MammutVideo", "MammutVideoConfig", "TextConfig", "TubeSpec", "VideoOutput", "VisionConfig",
    "create_model", "get_preset", "get_tokenizer", "list_presets", "load_model",
]
