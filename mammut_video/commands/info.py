"""``mammut-video info CKPT``: preset, parameter counts per part, tokenizer and where the weights came from."""

from __future__ import annotations

import argparse

from mammut_video.commands.args import add_verbosity

RESUMABLE = False


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a mammut-video checkpoint: preset, parameters, tokenizer, provenance",
        description="Print the preset, parameter counts per part, tokenizer and where the weights came from "
                    "(reads config.json and the header of model.safetensors only, without loading the weights; "
                    "a config or weights that loading would refuse are refused here too, exit 2).",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory (written by save_pretrained / convert)")
    add_verbosity(p)
    p.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    from mammut_video.checkpoint.describe import describe

    print("\n".join(describe(args.checkpoint)))
    return 0
