"""``mammut-video caption VIDEO...``: one caption per video; folders are captioned file by file."""

from __future__ import annotations

import argparse
import json
import sys

from mammut_video.commands.args import (
    add_batching,
    add_checkpoint,
    add_inference_runtime,
    add_verbosity,
    positive_int,
    show_progress,
    wrap,
)

RESUMABLE = False


def add_generation(group: argparse._ArgumentGroup, max_new_tokens: int) -> None:
    """--beams and --max-new-tokens (shared with ask)."""
    group.add_argument("--beams", type=positive_int, default=1, metavar="K",
                       help="beam search with K beams; 1 decodes greedily (default: 1)")
    group.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens, metavar="M",
                       help=f"longest text generated, in tokens (default: {max_new_tokens})")


def add_segment(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--start", type=float, metavar="S",
                       help="use the clip from S seconds on (default: from the start)")
    group.add_argument("--end", type=float, metavar="E", help="use the clip up to E seconds (default: to the end)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "caption", help="caption video files, or every video in a folder",
        description=wrap(
            "Print one caption per video: `path<TAB>caption`, or JSON lines with --json. A folder is "
            "walked recursively and every video in it is captioned, with a progress bar. A video found in a "
            "folder that cannot be decoded is skipped and reported on stderr; a file named on the command line "
            "that cannot be decoded is an error (exit 2) after the others are captioned."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files and/or folders of videos")
    model = p.add_argument_group("model")
    add_checkpoint(model)
    add_inference_runtime(model)
    gen = p.add_argument_group("generation")
    add_generation(gen, 30)
    add_segment(gen)
    run = p.add_argument_group("run")
    add_batching(run, batch_size=8, max_workers=2)
    run.add_argument("--json", action="store_true",
                     help='print one JSON object per video: {"path", "caption"} or {"path", "error"} (default: '
                          "tab-separated text)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown on a terminal)")
    add_verbosity(p)
    p.set_defaults(run=run_caption)


def run_caption(args: argparse.Namespace) -> int:
    from mammut_video.inference.caption import CaptionConfig, caption_videos

    config = CaptionConfig(args.videos, args.checkpoint, frames=args.frames, start=args.start, end=args.end,
                           num_beams=args.beams, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           workers=args.workers, device=args.device, precision=args.precision,
                           compile=args.compile, progress=show_progress(args))
    done = skipped = 0
    bad_given = []
    for result in caption_videos(config):
        if result.caption is not None:
            done += 1
            print(json.dumps({"path": str(result.path), "caption": result.caption}) if args.json
                  else f"{result.path}\t{result.caption}", flush=True)
            continue
        if args.json:
            print(json.dumps({"path": str(result.path), "error": result.error}), flush=True)
        if result.given:
            bad_given.append(result.error)
        else:
            skipped += 1
            print(f"mammut-video caption: skipped: {result.error}", file=sys.stderr)
    if skipped:
        print(f"mammut-video caption: {done} captioned, {skipped} skipped (could not be decoded)", file=sys.stderr)
    if bad_given:
        for error in bad_given:
            print(f"mammut-video caption: error: {error}", file=sys.stderr)
        return 2
    return 0 if done else 1
