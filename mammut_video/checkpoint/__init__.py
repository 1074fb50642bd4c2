"""Checkpoints: the own format (``save_pretrained`` / ``load_model``) and importers for timm,
open_clip / OpenAI-CLIP and openMaMMUT weights (``convert``).

Names load lazily so that ``mammut-video --help`` (which imports the command modules) stays
free of torch.
"""

from __future__ import annotations

from mammut_video._lazy import lazy_exports

_EXPORTS = {
    "SOURCES": ".convert", "convert": ".convert", "from_open_clip": ".convert", "from_openmammut": ".convert",
    "from_timm": ".convert",
    "CheckpointError": ".files", "read_state_dict": ".files",
    "load_model": ".pretrained", "read_checkpoint_config": ".pretrained", "save_pretrained": ".pretrained",
    "check_state_dict": ".strict", "load_state_dict_strict": ".strict",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
