"""What ``mammut-video info`` prints: a checkpoint described from its config and weight header alone."""

from __future__ import annotations

import json
from pathlib import Path

from mammut_video.checkpoint.files import CheckpointError
from mammut_video.checkpoint.pretrained import WEIGHTS_FILE, read_checkpoint_config


def _check_against_config(path: str, model_config: dict, shapes: dict[str, list[int]], source: str) -> None:
    """The :class:`CheckpointError` ``load_model`` would raise for this config and these weights, found
    with a model built on the meta device (shapes only: nothing is allocated or read)."""
    import torch

    from mammut_video.checkpoint.pretrained import TIME_TABLE, build_from_config
    from mammut_video.checkpoint.strict import check_state_dict

    with torch.device("meta"):
        model = build_from_config(model_config, directory=path)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if TIME_TABLE not in shapes:  # a checkpoint older than the table: load_model fills it in
        expected.pop(TIME_TABLE, None)
    check_state_dict(expected, {k: torch.empty(s, device="meta") for k, s in shapes.items()}, source)


def describe(path: str) -> list[str]:
    """Lines printed by ``info`` (reads config.json and the safetensors header only; a config or weights
    that ``load_model`` would refuse raise the same :class:`CheckpointError`)."""
    from safetensors import safe_open

    meta = read_checkpoint_config(path)
    cfg, prov = meta["model"], meta.get("provenance") or {}
    parts: dict[str, int] = {}
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {key: f.get_slice(key).get_shape() for key in f.keys()}
    except Exception as exc:  # safetensors raises its own types for a damaged header
        raise CheckpointError(f"{weights}: not a readable safetensors file ({type(exc).__name__})") from exc
    _check_against_config(path, meta["model"], shapes, str(weights))
    for key, shape in shapes.items():
        n = 1
        for d in shape:
            n *= d
        group = ".".join(key.split(".")[:2]) if key.startswith(("visual.", "text.")) else key
        group = {"visual.trunk": "vision trunk (ViT)", "visual.tubes": "video tubes", "visual.proj": "visual proj"}.get(
            group, "text decoder" if group.startswith("text.") else group)
        parts[group] = parts.get(group, 0) + n
    v, t = cfg.get("vision", {}), cfg.get("text", {})
    lines = [
        f"checkpoint: {path}",
        f"preset: {cfg.get('name', '?')}",
        f"vision: {v.get('timm_model')} {json.dumps(v.get('timm_kwargs') or {})} width {v.get('width')}, "
        f"patch {v.get('patch_size')}, image {v.get('image_size')}px, tubes "
        + ", ".join(f"{tb['name']}{tuple(tb['kernel'])}" for tb in v.get("tubes", [])),
        f"text decoder: width {t.get('width')}, {t.get('layers')} layers, {t.get('heads')} heads, "
        f"cross-attention every {t.get('cross_attn_ratio')} layers, vocab {t.get('vocab_size')}, "
        f"context {t.get('context_length')}, contrastive pooling {t.get('pooling', 'avg_all')}"
        + (", pad-masked attention" if t.get("pad_mask") else ""),
        f"embed dim: {cfg.get('embed_dim')}, frames: {cfg.get('num_frames')}",
        f"tokenizer: {json.dumps(cfg.get('tokenizer'))}",
        f"parameters: {sum(parts.values()):,} total",
    ]
    lines += [f"  {name}: {n:,}" for name, n in sorted(parts.items(), key=lambda kv: -kv[1])]
    lines.append(f"weights from: {prov.get('source', 'unknown')}")
    for key in ("path", "sha256", "file_bytes", "preset", "converted_at", "saved_at", "converter"):
        if prov.get(key) is not None:
            lines.append(f"  {key}: {prov[key]}")
    lines += [f"  fresh: {part}" for part in prov.get("fresh", [])]
    lines += [f"  note: {note}" for note in prov.get("notes", [])]
    return lines
