"""Argument types and the option groups the commands share, so that every command spells them alike.

Light on purpose: nothing here imports torch, so ``mammut-video --help`` stays fast. Values are
checked by the same functions the library's settings classes use (``mammut_video.errors``).
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable

from mammut_video.errors import ConfigError, check_int
from mammut_video.runtime.devices import check_device_name, default_workers
from mammut_video.runtime.precision import PRECISIONS


class CommandParser(argparse.ArgumentParser):
    """A command's parser: a bad option is reported in one line (with where to find the help), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def wrap(*paragraphs: str) -> str:
    """Paragraphs filled to 88 columns, for descriptions shown with RawDescriptionHelpFormatter."""
    return "\n\n".join(textwrap.fill(p, 88) for p in paragraphs)


def _checked(check: Callable[[str], object], name: str) -> Callable[[str], object]:
    """An argparse ``type=`` from a library check: its ConfigError becomes argparse's one-line error."""

    def parse(text: str) -> object:
        try:
            return check(text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name
    return parse


def int_at_least(minimum: int) -> Callable[[str], object]:
    """An argparse type accepting whole numbers >= ``minimum``."""
    return _checked(lambda text: check_int(text, "", minimum), f"int >= {minimum}")


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
device_name = _checked(check_device_name, "device")


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """-v / -q: how much the command says on stderr (progress, summaries, warnings)."""
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="say more on stderr: debug messages from the library (default: progress, summaries and warnings)")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="say only warnings and errors on stderr, no progress bar (default: off)")


def add_checkpoint(group: argparse._ArgumentGroup, required_note: str = "required") -> None:
    group.add_argument("--checkpoint", metavar="CKPT",
                       help="checkpoint directory (config.json + model.safetensors + tokenizer), as written by "
                            f"model.save_pretrained or `mammut-video convert`; nothing is downloaded ({required_note})")


def add_frames(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--frames", type=positive_int, metavar="N",
                       help="frames sampled uniformly from each clip, N >= 1 (default: the checkpoint's num_frames)")


def add_device(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--device", type=device_name, metavar="DEV",
                       help="cpu, cuda or cuda:N; under torchrun each process uses cuda:LOCAL_RANK (default: cuda "
                            "when available, else cpu)")


def add_precision(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--precision", choices=PRECISIONS, metavar="P",
                       help="fp32: full float32, no autocast; bf16: autocast to bfloat16 (float32 range, "
                            "results differ a little from fp32's); fp16: autocast to float16 (for GPUs) "
                            "(default: fp32 on the CPU, where bf16 autocast is several times slower without "
                            "bf16 instructions but faster with them (AVX512-BF16, AMX); bf16 on CUDA)")


def add_compile(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--compile", action="store_true",
                       help="compile the video encoder (and, for commands that generate text, the decoder's cached "
                            "step) with torch.compile: the first batches pay the compilation (minutes on a CPU), "
                            "the outputs are the same. On a CPU the decoder's step gets its weights frozen in: "
                            "generating for one clip about 1.5x faster, about 1.3 GB more memory for B-16 "
                            "(default: off)")


def add_inference_runtime(group: argparse._ArgumentGroup) -> None:
    """What every inference command (eval, embed, caption, ask) takes after its checkpoint: --frames,
    --device, --precision, --compile."""
    add_frames(group)
    add_device(group)
    add_precision(group)
    add_compile(group)


def add_batching(group: argparse._ArgumentGroup, batch_size: int = 8, max_workers: int = 4) -> None:
    """--batch-size and --workers (:func:`add_workers`)."""
    group.add_argument("--batch-size", type=positive_int, default=batch_size, metavar="B",
                       help=f"clips decoded and encoded per batch (default: {batch_size})")
    add_workers(group, max_workers)


def add_workers(group: argparse._ArgumentGroup, max_workers: int = 4) -> None:
    """--workers, defaulting to :func:`default_workers` (``max_workers``)."""
    workers = default_workers(max_workers)
    group.add_argument("--workers", type=non_negative_int, default=workers, metavar="W",
                       help="video decoding processes; 0 decodes in the main process (default: "
                            f"min({max_workers}, CPU cores), {workers} on this machine)")


def add_run_dir(group: argparse._ArgumentGroup, holds: str, default: str, resume_help: str) -> None:
    """--out, --resume / --overwrite (exclusive) and --no-progress: an output folder that survives a crash."""
    group.add_argument("--out", metavar="DIR", help=f"output folder for {holds} (default: {default})")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument("--resume", action="store_true", help=resume_help)
    exclusive.add_argument("--overwrite", action="store_true",
                           help="discard the results already in --out and start again (default: off)")
    group.add_argument("--no-progress", action="store_true",
                       help="no progress bar (default: a bar with items/s and ETA on rank 0 when stderr is a "
                            "terminal, a log line a minute otherwise)")


def show_progress(args: argparse.Namespace) -> bool:
    return not (getattr(args, "no_progress", False) or getattr(args, "quiet", False))
