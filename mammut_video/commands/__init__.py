"""The ``mammut-video`` command line: one module per command, the only place that parses
arguments, prints and picks exit codes.

Each command module offers ``add_parser(subparsers)`` (its parser sets ``run``, called with the
parsed arguments and returning the exit code) and ``RESUMABLE`` (whether ``--resume`` continues
an interrupted run). Modules load nothing heavy at import, so ``--help`` stays fast; the library
loads when a command runs.

Exit codes, the same from every command: 0 done; 1 the run finished but produced nothing usable
(every item failed); 2 an error in the input (a file, an option, a checkpoint), told in one line
on stderr; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mammut_video import __version__
from mammut_video.commands.args import CommandParser
from mammut_video.errors import MammutVideoError

# command modules, in the order `--help` lists them
COMMANDS: dict[str, str] = {
    "caption": "mammut_video.commands.caption",
    "ask": "mammut_video.commands.ask",
    "eval": "mammut_video.commands.eval",
    "finetune": "mammut_video.commands.finetune",
    "embed": "mammut_video.commands.embed",
    "search": "mammut_video.commands.search",
    "convert": "mammut_video.commands.convert",
    "info": "mammut_video.commands.info",
}

EXIT_OK, EXIT_NOTHING_DONE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammut-video",
        description="Video QA, captioning and embeddings with sparse video tubes and the MaMMUT decoder. "
                    "`mammut-video COMMAND --help` explains each command's options.",
        epilog="exit codes: 0 done; 1 finished but nothing could be processed; 2 error in the input (one line "
               "on stderr); 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"mammut-video {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command", parser_class=CommandParser)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


class _Handler(logging.Handler):
    """Library log records to stderr, printed between progress-bar redraws."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            if "tqdm" in sys.modules:
                from tqdm import tqdm

                tqdm.write(message, file=sys.stderr)
            else:
                print(message, file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never end the run
            self.handleError(record)


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Route the library's ``logging`` to stderr: INFO by default, DEBUG with -v, WARNING with -q."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logger = logging.getLogger("mammut_video")
    for handler in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(handler)
    logger.addHandler(_Handler())
    logger.setLevel(level)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    configure_logging(args.verbose, args.quiet)
    name = f"mammut-video {args.command}"
    try:
        return int(args.run(args) or EXIT_OK)
    except MammutVideoError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        resumable = getattr(importlib.import_module(COMMANDS[args.command]), "RESUMABLE", False)
        hint = "; rerun with --resume to continue" if resumable else ""
        print(f"{name}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
