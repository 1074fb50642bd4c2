"""``mammut-video convert``: import timm / open_clip / openMaMMUT weights into a checkpoint directory."""

from __future__ import annotations

import argparse
from typing import Any

from mammut_video.commands.args import add_verbosity, positive_int
from mammut_video.errors import ConfigError

RESUMABLE = False


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "convert",
        help="import timm / open_clip / openMaMMUT weights into a mammut-video checkpoint",
        description=(
            "Convert a local weight file into a mammut-video checkpoint directory (config.json + "
            "model.safetensors + tokenizer). The model size is read off the weights unless --preset "
            "is given, in which case the preset must match them. Attention heads are not in the weights: "
            "they follow open_clip's convention for the width unless --vision-heads / --text-heads say "
            "otherwise. Video tubes are inflated from the "
            "imported patch embedding; parts the source does not hold (the decoder, for timm and "
            "open_clip) are freshly initialised and reported."
        ),
    )
    p.add_argument("--from", dest="source", required=True, choices=["timm", "open_clip", "openmammut"],
                   help="kind of weights: a timm ViT state dict; an open_clip / OpenAI-CLIP / CoCa checkpoint "
                        "(its visual tower); an openMaMMUT checkpoint (LAION fork or upstream open_clip layout)")
    p.add_argument("src", metavar="SRC", help="weight file (.pth / .pt / .bin / .safetensors)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="checkpoint directory to write: new, empty, or a mammut-video checkpoint (replaced "
                        "atomically); a directory holding other files is refused, never deleted")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="build this preset instead of inferring the size from the weights "
                        "(mammut-video-tiny, mammut-video-B-16, mammut-video-L-14); an error if it does not match")
    p.add_argument("--vision-heads", type=positive_int, default=None, metavar="N",
                   help="attention heads of the ViT (not stored in the weights). Default: open_clip's convention "
                        "for the width, i.e. width // 64 except ViT-H 1280 -> 16 (head_width 80), ViT-g 1408 -> 16, "
                        "ViT-bigG 1664 -> 16, ViT-e 1792 -> 16, SO400M 1152 -> 16; give it for anything else")
    p.add_argument("--text-heads", type=positive_int, default=None, metavar="N",
                   help="openmammut only: attention heads of the text decoder (default: width // 64)")
    p.add_argument("--cross-attn-ratio", type=positive_int, default=None, metavar="N",
                   help="openmammut only: one cross-attention block every N decoder layers; needed only when "
                        "the weights leave it ambiguous (then the error says so)")
    p.add_argument("--text-pooling", choices=["avg_all", "avg"], default=None,
                   help="openmammut only: contrastive text pooling. avg_all (default): mean over all positions, "
                        "pads included, as the released openMaMMUT weights (LAION fork) were trained; avg: pads "
                        "excluded, open_clip MultimodalCfg's default pool_type")
    p.add_argument("--text-pad-mask", action="store_true", default=None,
                   help="openmammut only: mask pad tokens out of self-attention in the contrastive pass "
                        "(open_clip MultimodalCfg's default use_pad_mask=True). Default off, as the released "
                        "openMaMMUT weights; give with --text-pooling avg for weights trained with open_clip's "
                        "MaMMUT defaults")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--quick-gelu", dest="quick_gelu", action="store_true", default=None,
                     help="open_clip / openmammut: the towers use QuickGELU (OpenAI CLIP weights; detected for "
                          "OpenAI's own files)")
    act.add_argument("--gelu", dest="quick_gelu", action="store_false",
                     help="open_clip / openmammut: the towers use exact GELU (open_clip's own trainings and "
                          "openMaMMUT; the default)")
    add_verbosity(p)
    p.set_defaults(run=run_convert)


# options that only some sources take: option -> (importer keyword, sources)
_SOURCE_OPTIONS = {
    "--quick-gelu/--gelu": ("quick_gelu", ("open_clip", "openmammut")),
    "--vision-heads": ("vision_heads", ("timm", "open_clip", "openmammut")),
    "--text-heads": ("text_heads", ("openmammut",)),
    "--cross-attn-ratio": ("cross_attn_ratio", ("openmammut",)),
    "--text-pooling": ("text_pooling", ("openmammut",)),
    "--text-pad-mask": ("text_pad_mask", ("openmammut",)),
}


def _importer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line as importer keywords; ConfigError for a source that has none."""
    kwargs = {}
    for option, (name, sources) in _SOURCE_OPTIONS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if args.source not in sources:
            raise ConfigError(f"{option} applies to --from {' / '.join(sources)} only")
        kwargs[name] = value
    return kwargs


def run_convert(args: argparse.Namespace) -> int:
    from mammut_video.checkpoint.convert import convert
    from mammut_video.checkpoint.pretrained import check_output_dir, save_pretrained

    kwargs = _importer_kwargs(args)
    check_output_dir(args.out)  # before the (slow) conversion
    model = convert(args.source, args.src, preset=args.preset, **kwargs)
    save_pretrained(model, args.out)
    prov = model.provenance
    print(f"converted {args.source} weights {args.src} -> {args.out}")
    print(f"  model: {model.config.name}  ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    for part in prov.get("fresh", []):
        print(f"  freshly initialised (not in the source): {part}")
    for note in prov.get("notes", []):
        print(f"  note: {note}")
    return 0
