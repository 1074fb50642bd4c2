"""``mammut-video convert`` (import foreign weights) and ``mammut-video info`` (describe a checkpoint)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "convert",
        help="import timm / open_clip / openMaMMUT weights into a mammut-video checkpoint",
        description=(
            "Convert a local weight file into a mammut-video checkpoint directory (config.json + "
            "model.safetensors + tokenizer). The model size is read off the weights unless --preset "
            "is given, in which case the preset must match them. Video tubes are inflated from the "
            "imported patch embedding; parts the source does not hold (the decoder, for timm and "
            "open_clip) are freshly initialised and reported."
        ),
    )
    p.add_argument("--from", dest="source", required=True, choices=["timm", "open_clip", "openmammut"],
                   help="kind of weights: a timm ViT state dict; an open_clip / OpenAI-CLIP / CoCa checkpoint "
                        "(its visual tower); an openMaMMUT checkpoint (LAION fork or upstream open_clip layout)")
    p.add_argument("src", metavar="SRC", help="weight file (.pth / .pt / .bin / .safetensors)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="checkpoint directory to write (replaced atomically if it exists)")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="build this preset instead of inferring the size from the weights "
                        "(mammut-video-tiny, mammut-video-B-16, mammut-video-L-14); an error if it does not match")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--quick-gelu", dest="quick_gelu", action="store_true", default=None,
                     help="open_clip only: the tower uses QuickGELU (OpenAI CLIP weights); detected for OpenAI's own files")
    act.add_argument("--gelu", dest="quick_gelu", action="store_false",
                     help="open_clip only: the tower uses exact GELU (open_clip's own trainings; the default)")
    p.set_defaults(func=run_convert)

    q = subparsers.add_parser(
        "info",
        help="describe a mammut-video checkpoint: preset, parameters, tokenizer, provenance",
        description="Print the preset, parameter counts per part, tokenizer and where the weights came from.",
    )
    q.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory (written by save_pretrained / convert)")
    q.set_defaults(func=run_info)


def run_convert(args: argparse.Namespace) -> int:
    from mammut_video.checkpoint.convert import convert
    from mammut_video.checkpoint.files import CheckpointError
    from mammut_video.checkpoint.pretrained import save_pretrained

    kwargs = {}
    if args.quick_gelu is not None:
        if args.source != "open_clip":
            print("error: --quick-gelu/--gelu apply to --from open_clip only", file=sys.stderr)
            return 2
        kwargs["quick_gelu"] = args.quick_gelu
    try:
        model = convert(args.source, args.src, preset=args.preset, **kwargs)
        save_pretrained(model, args.out)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    prov = model.provenance
    print(f"converted {args.source} weights {args.src} -> {args.out}")
    print(f"  model: {model.config.name}  ({_count(model) / 1e6:.1f}M parameters)")
    for part in prov.get("fresh", []):
        print(f"  freshly initialised (not in the source): {part}")
    for note in prov.get("notes", []):
        print(f"  note: {note}")
    return 0


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(path: str) -> list[str]:
    """Lines printed by ``info`` (reads config.json and the safetensors header only)."""
    import json
    from pathlib import Path

    from safetensors import safe_open

    from mammut_video.checkpoint.pretrained import WEIGHTS_FILE, read_checkpoint_config

    meta = read_checkpoint_config(path)
    cfg, prov = meta["model"], meta.get("provenance") or {}
    parts: dict[str, int] = {}
    with safe_open(str(Path(path) / WEIGHTS_FILE), framework="pt") as f:
        for key in f.keys():
            n = 1
            for d in f.get_slice(key).get_shape():
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
        f"context {t.get('context_length')}",
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


def run_info(args: argparse.Namespace) -> int:
    from mammut_video.checkpoint.files import CheckpointError

    try:
        lines = describe(args.checkpoint)
    except (CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0
