"""Checkpoints: the own format (``save_pretrained`` / ``load_model``) and importers for timm,
open_clip / OpenAI-CLIP and openMaMMUT weights (``convert``).

Names load lazily so that ``mammut-video --help`` (which imports ``checkpoint.cli``) stays
free of torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SOURCES": "convert", "convert": "convert", "from_open_clip": "convert", "from_openmammut": "convert",
    "from_timm": "convert",
    "CheckpointError": "files", "read_state_dict": "files",
    "load_model": "pretrained", "read_checkpoint_config": "pretrained", "save_pretrained": "pretrained",
    "check_state_dict": "strict", "load_state_dict_strict": "strict",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mammut_video.checkpoint' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mammut_video.checkpoint.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
