"""mammut-video: sparse video tubes on a pretrained image ViT + the MaMMUT two-pass decoder.

The public names are imported lazily so that ``import mammut_video`` (and the CLI's
``--help``) stays fast; torch, timm and open_clip load when a name that needs them is used.
The torchvision guard is installed first, so that ``import timm`` / ``import open_clip`` work
after ``import mammut_video`` on CPU-only torch (see ``_torchvision_guard``).
"""

from __future__ import annotations

import importlib
from typing import Any

from mammut_video import _torchvision_guard

_torchvision_guard.install()

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "read_clip": "mammut_video.video",
    "probe_video": "mammut_video.video",
    "VideoInfo": "mammut_video.video",
    "VideoDecodeError": "mammut_video.video",
    "build_clip_transform": "mammut_video.video",
    "create_model": "mammut_video.model",
    "load_model": "mammut_video.model",
    "list_presets": "mammut_video.model",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mammut_video' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
