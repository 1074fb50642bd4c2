"""The ``mammut-video`` command line.

Each sub-command lives next to the code it drives, in a module exposing
``add_parser(subparsers)``; the parser it adds sets ``func`` (called with the parsed
arguments, returning an exit code). Modules load only when needed so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mammut_video import __version__

# sub-command modules, in the order `--help` lists them
COMMAND_MODULES: list[str] = [
    "mammut_video.checkpoint.cli",
    "mammut_video.eval.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammut-video",
        description="Video QA, captioning and embeddings with sparse video tubes and the MaMMUT decoder.",
    )
    parser.add_argument("--version", action="version", version=f"mammut-video {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
