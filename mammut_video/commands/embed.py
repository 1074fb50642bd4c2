"""``mammut-video embed INPUT --out OUT``: embeddings of every video of a folder or list, resumable."""

from __future__ import annotations

import argparse

from mammut_video.commands.args import (
    add_batching,
    add_checkpoint,
    add_inference_runtime,
    add_run_dir,
    add_verbosity,
    positive_int,
    show_progress,
    wrap,
)
from mammut_video.embed.config import DEFAULT_SHARD_ROWS

RESUMABLE = True

_DESCRIPTION = wrap(
    "Embed every video of INPUT with the model's video encoder: `mammut-video embed INPUT --out OUT "
    "--checkpoint CKPT`. INPUT is a folder (walked recursively; videos recognised by extension, files with an "
    "unknown extension by probing them with FFmpeg) or a list: a text file with one path per line, or a CSV "
    "whose header names a `path` column, with optional `start` and `end` columns in seconds. Relative paths "
    "in a list are read from the list's folder.",
    "Writes to OUT: shards/*.safetensors (L2-normalised embeddings, float16 by default; with --save-tokens the "
    "visual tokens too), index.jsonl (one row per embedding: path, shard, row, window, start, end, frames, "
    "duration, size, mtime), errors.jsonl (one row per file or window that could not be read: path, cause, "
    "message) and settings.json. A file that cannot be read never stops the run.",
    "Nothing lost, nothing twice: each shard carries its own index rows and appears by one atomic rename, so "
    "after a crash or Ctrl-C running the same command again continues: finished inputs are skipped, inputs "
    "whose size or mtime changed are embedded again, failed ones retried; other settings are refused (the "
    "message lists what differs). Run under `torchrun --nproc_per_node N -m mammut_video embed ...` to split "
    "the inputs over N processes (multi-node too); the result equals a one-process run.",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed", help="embed every video of a folder or list into searchable shards (resumable, torchrun-ready)",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT",
                   help="a folder of videos (recursive) or a text/CSV file listing video paths (see above)")
    model = p.add_argument_group("model")
    add_checkpoint(model, required_note="this or --preset")
    model.add_argument("--preset", metavar="NAME",
                       help="a model preset with random weights (seed 0) instead of --checkpoint, for trying the "
                            "pipeline and benchmarks: its embeddings mean nothing (default: none)")
    add_inference_runtime(model)

    clips = p.add_argument_group("clips")
    clips.add_argument("--clip-seconds", type=_seconds, metavar="S",
                       help="embed windows of S seconds instead of one embedding per file, so that search finds "
                            "the moment, not only the file; the last window ends at the video's end (default: one "
                            "embedding per file, frames sampled over the whole video)")
    clips.add_argument("--stride-seconds", type=_seconds, metavar="R",
                       help="with --clip-seconds: seconds from one window's start to the next; R < S overlaps "
                            "windows (default: S)")

    out = p.add_argument_group("results")
    out.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                     help="how embeddings are stored (default: float16; tokens are always float16)")
    out.add_argument("--save-tokens", action="store_true",
                     help="also store each clip's visual tokens (N x D, float16), for building your own heads; a "
                          "B-16 clip's tokens take ~0.8 MB (default: off)")
    out.add_argument("--shard-rows", type=positive_int, default=DEFAULT_SHARD_ROWS, metavar="N",
                     help="rows per shard file; a shard is also written once its first row is a minute old, so a "
                          f"crash loses at most a minute of work (default: {DEFAULT_SHARD_ROWS}, fewer with "
                          "--save-tokens so that a shard stays under 256 MiB)")
    add_run_dir(out, "the shards, index.jsonl, errors.jsonl and settings.json", "none, it is required",
                "continue the run in --out; this is also what happens without it when --out holds a run with the "
                "same settings (default: continue when possible; a run with other settings is refused)")
    add_batching(p.add_argument_group("speed"))
    add_verbosity(p)
    p.set_defaults(run=run_embed)


def _seconds(text: str) -> float:
    from mammut_video.embed.config import check_seconds
    from mammut_video.errors import ConfigError

    try:
        return check_seconds(text, "")
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def config_from_args(args: argparse.Namespace):
    """The :class:`~mammut_video.embed.EmbedConfig` the parsed options describe."""
    from mammut_video.embed.config import EmbedConfig

    return EmbedConfig(
        input=args.input, out=args.out, checkpoint=args.checkpoint, preset=args.preset, frames=args.frames,
        batch_size=args.batch_size, workers=args.workers, device=args.device, precision=args.precision,
        compile=args.compile, dtype=args.dtype, clip_seconds=args.clip_seconds, stride_seconds=args.stride_seconds,
        save_tokens=args.save_tokens, shard_rows=args.shard_rows, resume=args.resume, overwrite=args.overwrite,
        progress=show_progress(args))


def run_embed(args: argparse.Namespace) -> int:
    import sys

    from mammut_video.embed.run import embed_folder

    summary = embed_folder(config_from_args(args))
    if summary.rank != 0:
        return 0
    print(summary.line())
    if summary.inputs and summary.rows == 0 and summary.failed:
        print(f"mammut-video embed: error: no video could be embedded (see {summary.errors_path})", file=sys.stderr)
        return 1
    return 0
