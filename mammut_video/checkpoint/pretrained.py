"""The own checkpoint format: a directory with ``config.json``, ``model.safetensors`` and the
tokenizer files.

``config.json``::

    {"format": "mammut-video", "format_version": 1,
     "model": <MammutVideoConfig.to_dict()>,      # holds the tokenizer spec
     "provenance": {"source": "timm" | "open_clip" | "openmammut" | "mammut-video", ...}}

The directory is written next to its destination and renamed into place (see
:func:`~mammut_video.checkpoint.files.atomic_directory`), so an interrupted save never leaves
a checkpoint that loads. An existing destination is replaced only when it is empty or a
mammut-video checkpoint holding nothing but its own files; anything else is refused
(:class:`CheckpointError` naming the files), never deleted.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mammut_video.checkpoint.files import (
    CheckpointError,
    StateDict,
    atomic_directory,
    check_replaceable,
    normal_permissions,
)
from mammut_video.checkpoint.strict import load_state_dict_strict

log = logging.getLogger(__name__)

FORMAT = "mammut-video"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _unshared(state_dict: StateDict) -> StateDict:
    """Detach, make contiguous, and copy tensors whose storage another key already uses
    (safetensors refuses shared storage, e.g. tied embeddings)."""
    seen: set[int] = set()
    out = {}
    for k, v in state_dict.items():
        v = v.detach().contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen and v.numel() > 0:
            v = v.clone()
        seen.add(ptr)
        out[k] = v.cpu()
    return out


def text_embedding_trained(provenance: dict[str, Any]) -> bool | None:
    """Whether a checkpoint's contrastive text embedding was ever trained, from its provenance:
    False for a decoder imported fresh (timm, open_clip ``convert``) or fine-tuned from such a start
    without the contrastive pass, True once the contrastive pass trained it or for openMaMMUT, None
    when the record does not say (checkpoints saved before it was recorded)."""
    tuned = provenance.get("finetune")
    if isinstance(tuned, dict):
        return tuned.get("text_embedding_trained")
    if "text decoder" in (provenance.get("fresh") or []):
        return False
    return True if provenance.get("source") == "openmammut" else None


def foreign_files(path: str | os.PathLike) -> list[str]:
    """Names in the existing directory ``path`` that a checkpoint saved there would not own.

    A mammut-video checkpoint owns ``config.json``, ``model.safetensors`` and the tokenizer file its
    config names; in any other directory every entry is foreign.
    """
    path = Path(path)
    names = sorted(p.name for p in path.iterdir())
    try:
        meta = read_checkpoint_config(path)
    except CheckpointError:
        return names
    owned = {CONFIG_FILE, WEIGHTS_FILE}
    model_file = ((meta.get("model") or {}).get("tokenizer") or {}).get("model_file")
    if isinstance(model_file, str) and model_file and not Path(model_file).is_absolute():
        owned.add(Path(model_file).parts[0])
    return [n for n in names if n not in owned]


def check_output_dir(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` now if :func:`save_pretrained` would refuse ``path``."""
    check_replaceable(Path(path), foreign_files)


def save_pretrained(
    model: nn.Module, path: str | os.PathLike, provenance: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to the checkpoint directory ``path`` (created or replaced atomically).

    An existing ``path`` must be empty or a mammut-video checkpoint with no other files in it
    (see :func:`foreign_files`); otherwise :class:`CheckpointError` and nothing is written.

    ``provenance`` records where the weights came from; when omitted, the model's own
    ``provenance`` attribute (set by :func:`load_model` and the converters) is kept.
    """
    from safetensors.torch import save_file

    config = model.config.to_dict()
    prov = dict(provenance or getattr(model, "provenance", None) or {"source": FORMAT})
    prov.setdefault("saved_at", now_utc())
    with atomic_directory(path, foreign=foreign_files) as tmp:
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is not None:
            spec = tokenizer.save(tmp)
            if spec is not None:
                config["tokenizer"] = spec
        save_file(
            _unshared(model.state_dict()),
            str(tmp / WEIGHTS_FILE),
            metadata={"format": "pt", "producer": FORMAT, "source": str(prov.get("source", ""))},
        )
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": config, "provenance": prov}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
        normal_permissions(tmp)  # safetensors writes 0o600
    return Path(path)


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and validate ``path/config.json``; returns the whole document."""
    path = Path(path)
    cfg_path = path / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: not found")
    if not path.is_dir():
        raise CheckpointError(f"{path}: is a file, not a checkpoint directory (expected a directory holding "
                              f"{CONFIG_FILE} + {WEIGHTS_FILE})")
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing; {path} is not a mammut-video checkpoint")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{cfg_path}: not a {FORMAT} checkpoint config (no 'format'/'model' fields)")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format_version {meta['format_version']} is newer than this mammut-video "
            f"({FORMAT_VERSION}); upgrade the package"
        )
    return meta


def read_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> StateDict:
    from safetensors.torch import load_file

    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        return load_file(str(weights), device=str(map_location))
    except Exception as exc:
        raise CheckpointError(f"{weights}: cannot read ({type(exc).__name__}: {exc})") from exc


def build_from_config(model_config: dict[str, Any], directory: str | os.PathLike | None = None) -> nn.Module:
    """Create a randomly initialised model from a config dict.

    Tokenizer files named relative in the spec (SentencePiece ``model_file``) are resolved
    against ``directory``, the checkpoint they were saved into.
    """
    from mammut_video.model import MammutVideoConfig, create_model

    model_config = dict(model_config)
    spec = dict(model_config.get("tokenizer") or {})
    if directory is not None and spec.get("model_file") and not Path(spec["model_file"]).is_absolute():
        spec["model_file"] = str(Path(directory) / spec["model_file"])
        model_config["tokenizer"] = spec
    try:
        config = MammutVideoConfig.from_dict(model_config)
    except (TypeError, ValueError) as exc:
        where = Path(directory) / CONFIG_FILE if directory is not None else "model config"
        raise CheckpointError(f"{where}: invalid model config ({exc})") from exc
    return create_model(config)


TIME_TABLE = "visual.time_embed"


def with_time_table(state_dict: StateDict, model: nn.Module, source: str) -> StateDict:
    """``state_dict`` with the temporal position table a checkpoint saved before it existed lacks.

    Such a checkpoint was trained with a fixed sin-cos term of the centre frame; the table is set
    to those values (``sincos_time_table``), so the model gives the outputs it gave then for clips
    of its ``num_frames`` frames (at other frame counts the rows are sampled linearly in between).
    Fine-tuning it then learns the table from there.
    """
    expected = model.state_dict().get(TIME_TABLE)
    if expected is None or TIME_TABLE in state_dict:
        return state_dict
    from mammut_video.model.tubes import sincos_time_table

    log.info("%s: saved before the learned temporal position table; %s set to the fixed sin-cos values it "
             "was trained with", source, TIME_TABLE)
    table = sincos_time_table(*expected.shape).to(expected.dtype)
    return {**state_dict, TIME_TABLE: table.to(next(iter(state_dict.values())).device)}


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Restore a model saved by :func:`save_pretrained` (eval mode, weights exactly as saved; a
    checkpoint older than the temporal position table gets it from :func:`with_time_table`)."""
    meta = read_checkpoint_config(path)
    model = build_from_config(meta["model"], directory=path)
    source = str(Path(path) / WEIGHTS_FILE)
    load_state_dict_strict(model, with_time_table(read_weights(path, map_location), model, source), source=source)
    model.provenance = dict(meta.get("provenance") or {})
    return model.to(map_location).eval()
