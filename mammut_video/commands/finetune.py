"""``mammut-video finetune``: train on a QA or caption set (custom or a benchmark split), resumable, DDP-ready."""

from __future__ import annotations

import argparse

from mammut_video.commands.args import (
    _checked,
    add_device,
    add_frames,
    add_precision,
    add_run_dir,
    add_verbosity,
    add_workers,
    non_negative_int,
    positive_int,
    show_progress,
    wrap,
)
from mammut_video.train.config import (
    CONTRASTIVE_KINDS,
    FINETUNE,
    SCRATCH,
    SPEC_HELP,
    TOKENIZERS,
    parse_duration,
    parse_freeze,
)

RESUMABLE = True

_DESCRIPTION = (
    "Fine-tune (or train from random weights) on a QA or caption set: `mammut-video finetune --train SPEC --out "
    "RUN_DIR (--checkpoint CKPT | --preset NAME) [--val SPEC] [options]`.",
    f"SPEC is {SPEC_HELP}; the split defaults to train for --train and val for --val.",
    f"Defaults follow the starting point. From --preset (random weights): {SCRATCH.describe()}. From "
    f"--checkpoint: {FINETUNE.describe()}. Either way: AdamW (no weight decay on norms, biases, position "
    "tables, logit_scale), linear warm-up then cosine decay, gradient clipping at 1. With --max-time alone the "
    "learning rate decays over the time budget.",
    "Writes to --out: metrics.jsonl (every step: loss, lr, samples/s; every validation: loss and accuracy or "
    "CIDEr), settings.json, last/ and best/ checkpoints (mv.load_model), train_state.pt (optimizer, schedule, "
    "RNG, data position; --resume continues from it), curves.png. Run under `torchrun --nproc_per_node N -m "
    "mammut_video finetune ...` for N processes: --batch-size is the global batch, so the run is the same.",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune or train a model on a QA or caption set (custom files or benchmark splits)",
        description=wrap(*_DESCRIPTION), formatter_class=argparse.RawDescriptionHelpFormatter)
    _data_options(p)
    _model_options(p)
    _optimisation_options(p)
    run = p.add_argument_group("run")
    add_run_dir(run, "metrics.jsonl, settings.json, checkpoints, train_state.pt and curves.png", "none: required",
                "continue the run in --out from its last saved state (train_state.pt): same losses as an "
                "uninterrupted run; refused when the settings differ (default: off)")
    run.add_argument("--val-every", type=positive_int, metavar="N",
                     help="validate (and save last/, best/, train_state.pt) every N steps (default: at the end of "
                          "an epoch, but at most about ten times a run, and at the end of the run)")
    run.add_argument("--save-every", type=positive_int, metavar="N",
                     help="save last/ and train_state.pt every N steps besides the validations (default: only "
                          "with the validations)")
    add_workers(run)
    run.add_argument("--seed", type=non_negative_int, default=0, metavar="S",
                     help="seed of the initialisation, the data order, frame sampling and augmentation (default: 0)")
    add_device(run)
    add_verbosity(p)
    p.set_defaults(run=run_finetune)


def _data_options(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--train", metavar="SPEC", required=True, help="the training split: " + SPEC_HELP)
    data.add_argument("--val", metavar="SPEC",
                      help="a validation split (same forms); without it there is no best/ (default: none)")
    data.add_argument("--video-root", metavar="DIR",
                      help="folder the custom files' video paths are relative to, or that holds a benchmark's "
                           "videos (default: the annotation file's folder; for benchmarks, found under DATA_ROOT)")
    data.add_argument("--task", choices=("qa", "caption"),
                      help="qa: loss on the answer tokens after the question prompt; caption: loss on the caption "
                           "tokens (default: what the SPEC holds)")
    data.add_argument("--cache-clips", action="store_true",
                      help="decode every clip once (uniform frames) and keep it in memory: for small sets, where "
                           "decoding would cost more than training (default: decode in --workers every epoch, "
                           "frames drawn at random)")
    data.add_argument("--crop-scale", type=float, default=1.0, metavar="F",
                      help="random resized crop keeping at least F of the frame's area; 1 = no crop, which keeps "
                           "every object in view for count questions (default: 1)")
    data.add_argument("--hflip", action="store_true",
                      help="random horizontal flips; off by default since they turn 'left' into 'right' without "
                           "changing the answer (default: off)")


def _model_options(p: argparse.ArgumentParser) -> None:
    model = p.add_argument_group("model")
    start = model.add_mutually_exclusive_group(required=True)
    start.add_argument("--checkpoint", metavar="CKPT",
                       help="fine-tune this checkpoint directory (config.json + model.safetensors + tokenizer)")
    start.add_argument("--preset", metavar="NAME",
                       help="train from random weights: mammut-video-tiny, mammut-video-B-16 or mammut-video-L-14")
    add_frames(model)
    model.add_argument("--freeze", type=_checked(parse_freeze, "freeze"), default=(), metavar="PARTS",
                       help="none, or a comma list of tubes (the tokenizer), vision (the whole video encoder), "
                            "text (the decoder) (default: none)")
    model.add_argument("--grad-checkpointing", action="store_true",
                       help="recompute the ViT and decoder blocks in the backward pass: less memory, more time "
                            "(default: off)")
    model.add_argument("--tokenizer", choices=TOKENIZERS,
                       help="--preset only: sentencepiece trains a vocabulary on the training texts (kept in "
                            "--out); clip_bpe uses open_clip's 49,408 tokens (default: sentencepiece)")
    model.add_argument("--vocab-size", type=positive_int, default=1000, metavar="V",
                       help="--tokenizer sentencepiece: at most V pieces, fewer when the texts hold fewer "
                            "(default: 1000)")


def _optimisation_options(p: argparse.ArgumentParser) -> None:
    opt = p.add_argument_group("optimisation (defaults follow --preset / --checkpoint)")
    length = opt.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, metavar="E",
                        help=f"passes over the training set (default: {SCRATCH.epochs} from a preset, "
                             f"{FINETUNE.epochs} from a checkpoint, unless --steps or --max-time is given)")
    length.add_argument("--steps", type=positive_int, metavar="S", help="optimizer steps (default: by --epochs)")
    opt.add_argument("--max-time", type=_checked(parse_duration, "duration"), metavar="T",
                     help="stop at this much training time (600, 600s, 10m, 1h30m), then validate and save; alone, "
                          "the learning rate decays over it (default: none)")
    opt.add_argument("--lr", type=float, metavar="LR",
                     help=f"peak learning rate (default: {SCRATCH.lr:g} from a preset, {FINETUNE.lr:g} from a checkpoint)")
    opt.add_argument("--weight-decay", type=float, metavar="WD",
                     help=f"AdamW weight decay of the matrices (default: {SCRATCH.weight_decay:g})")
    opt.add_argument("--warmup", type=non_negative_int, metavar="N",
                     help=f"linear warm-up steps, at most half the run (default: {SCRATCH.warmup})")
    opt.add_argument("--batch-size", type=positive_int, metavar="B",
                     help=f"clips per optimizer step over all processes; for QA each clip comes with all its questions, for "
                          f"captions each with one caption (default: {SCRATCH.batch_size} from a "
                          f"preset, {FINETUNE.batch_size} from a checkpoint)")
    opt.add_argument("--grad-accum", type=positive_int, default=1, metavar="K",
                     help="split each process's share of the batch into K micro-batches: the same step with "
                          "less memory (default: 1)")
    opt.add_argument("--grad-clip", type=float, default=1.0, metavar="C",
                     help="clip the gradient norm to C; 0 turns clipping off (default: 1)")
    add_precision(opt)
    opt.add_argument("--contrastive-weight", type=float, default=0.0, metavar="W",
                     help="add W x the video-text contrastive loss (the decoder's first pass, as MaMMUT trains); "
                          "0 runs neither that pass nor the visual pooling head (default: 0)")
    opt.add_argument("--contrastive", choices=CONTRASTIVE_KINDS, default="softmax",
                     help="softmax (CLIP InfoNCE) or focal (MaMMUT's focal contrastive loss) (default: softmax)")


def config_from_args(args: argparse.Namespace):
    """The :class:`~mammut_video.train.FinetuneConfig` the parsed options describe."""
    from mammut_video.errors import ConfigError
    from mammut_video.train.config import FinetuneConfig

    if args.out is None:
        raise ConfigError("pass --out RUN_DIR: the folder for the checkpoints, metrics and curves")
    return FinetuneConfig(
        train=args.train, out=args.out, val=args.val, video_root=args.video_root, checkpoint=args.checkpoint,
        preset=args.preset, task=args.task, epochs=args.epochs, steps=args.steps, max_time=args.max_time, lr=args.lr,
        weight_decay=args.weight_decay, warmup=args.warmup, batch_size=args.batch_size, grad_accum=args.grad_accum,
        grad_clip=args.grad_clip, frames=args.frames, freeze=args.freeze, grad_checkpointing=args.grad_checkpointing,
        precision=args.precision, contrastive_weight=args.contrastive_weight, contrastive=args.contrastive,
        tokenizer=args.tokenizer, vocab_size=args.vocab_size, cache_clips=args.cache_clips,
        crop_scale=args.crop_scale, hflip=args.hflip, val_every=args.val_every, save_every=args.save_every,
        workers=args.workers, seed=args.seed, device=args.device, resume=args.resume, overwrite=args.overwrite,
        progress=show_progress(args))


def run_finetune(args: argparse.Namespace) -> int:
    from mammut_video.train import finetune

    result = finetune(config_from_args(args))
    if not _is_main():  # a torchrun rank other than 0: rank 0 reports
        return 0
    files = result.files
    if result.stopped == "finished":
        print(f"finetune {result.task}: the run in {files.root} had already finished at step {result.steps} "
              f"({result.epochs:.2f} epochs); nothing trained (--overwrite starts again)")
    elif result.stopped == "time_spent":
        print(f"finetune {result.task}: the run in {files.root} stopped at its time budget at step {result.steps} "
              f"after {result.seconds:.0f} s of training; nothing trained: a larger --max-time (it counts every "
              "run's training time) or none continues it")
    else:
        how = {"steps": "the step count", "epochs": "the epoch count", "max_time": "the time budget"}[result.stopped]
        print(f"finetune {result.task}: {result.steps} steps ({result.epochs:.2f} epochs) in {result.seconds:.0f} s, "
              f"stopped at {how}; {result.samples_per_s:.1f} samples/s")
    if result.train_loss is not None:
        print(f"last training loss: {result.train_loss:.4f}")
    if result.val:
        metric = "val_accuracy" if result.task == "qa" else "val_cider"
        print(f"validation (step {result.val['step']}): loss {result.val['val_loss']:.4f}, "
              f"{metric.removeprefix('val_')} {result.val[metric]:.2f}; best {result.best[metric]:.2f} at step "
              f"{result.best['step']}")
    if result.failed_clips:
        print(f"training clips skipped (could not be decoded): {result.failed_clips} (listed in metrics.jsonl)")
    print(f"checkpoints: {files.last}" + (f", {files.best}" if result.best else ""))
    print(f"metrics: {files.metrics}\ncurves: {files.curves}")
    return 0


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
