"""Checkpoints: the own format (``save_pretrained`` / ``load_model``) and importers for timm,
open_clip / OpenAI-CLIP and openMaMMUT weights (``convert``)."""

from mammut_video.checkpoint.convert import SOURCES, convert, from_open_clip, from_openmammut, from_timm
from mammut_video.checkpoint.files import CheckpointError, read_state_dict
from mammut_video.checkpoint.pretrained import load_model, read_checkpoint_config, save_pretrained
from mammut_video.checkpoint.strict import check_state_dict, load_state_dict_strict

__all__ = [
    "CheckpointError", "SOURCES", "check_state_dict", "convert", "from_open_clip", "from_openmammut",
    "from_timm", "load_model", "load_state_dict_strict", "read_checkpoint_config", "read_state_dict",
    "save_pretrained",
]
