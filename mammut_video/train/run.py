"""``finetune(config)``: load the data, build or load the model, open the run directory, train.

Every rank of a torchrun group calls it. Rank 0 alone trains a SentencePiece vocabulary (for a
model made from a preset), writes ``metrics.jsonl``, validates and saves; the others wait at
those points (``DistContext.on_main``), so a failure there stops every rank with its message.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mammut_video.errors import ConfigError
from mammut_video.runtime.distributed import DistContext
from mammut_video.runtime.rundir import file_sha256
from mammut_video.train.config import FinetuneConfig
from mammut_video.train.data import (
    ClipGroup,
    DataSpec,
    FrameCache,
    Sample,
    TrainClips,
    clip_groups,
    corpus,
    decode_once,
    load_split,
    parse_spec,
    samples_of,
    spec_task,
)
from mammut_video.train.loop import MOST_FAILED, FinetuneResult, Geometry, Trainer, TrainError
from mammut_video.train.rundir import TOKENIZER_PREFIX, MetricsLog, RunFiles, load_state

log = logging.getLogger(__name__)


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Run one fine-tuning (see :class:`FinetuneConfig` and the module docstring)."""
    from mammut_video.runtime.distributed import init_distributed
    from mammut_video.runtime.precision import default_precision
    from mammut_video.runtime.rundir import open_run_dir

    files = RunFiles(config.out_dir)
    start = _start_point(config)
    train_spec = parse_spec(config.train, "train", "--train")
    val_spec = parse_spec(config.val, "val", "--val") if config.val else None
    task = config.task or spec_task(train_spec)
    train, train_identity = _samples(train_spec, task, config, "--train")
    val, val_identity = _samples(val_spec, task, config, "--val") if val_spec else ([], None)
    if task == "caption" and val:
        from mammut_video.eval.caption_metrics import require_java

        require_java()  # CIDEr at the first validation, not after an epoch
    frames = config.frames or int(start["num_frames"])
    settings = {**config.settings(), "task": task, "frames": frames, "train": train_identity, "val": val_identity,
                "start": start["identity"]}
    groups = clip_groups(train, task)
    with init_distributed(config.device) as ctx:
        # the precision the run computes in, not None: a resume on a device with another default is refused
        settings["precision"] = config.precision or default_precision(ctx.device)
        Geometry(int(config.resolved("batch_size")), ctx.world_size, config.grad_accum, len(groups)).steps_per_epoch
        open_run_dir(files.root, files.results, settings, config.resume, config.overwrite, ctx)
        state = load_state(files.state) if config.resume and files.state.is_file() else None
        if config.resume and state is None:
            _log(ctx, "--resume: %s holds no saved state yet (%s); starting at step 0", files.root, files.state.name)
        model = _model(config, ctx, files, task, frames, train)
        _ready_for_training(model, config, frames, ctx.device)
        log_file = MetricsLog(files.metrics, resume_step=_resume_step(state) if config.resume else None) \
            if ctx.is_main else None
        try:
            trainer = _trainer(config, ctx, files, model, task, frames, groups, val, log_file)
            if state is not None:
                trainer.load_state_dict(state)
                _log(ctx, "resuming %s at step %d (epoch %d)", files.root, trainer.position.step, trainer.position.epoch)
            _log(ctx, "%s", _summary(trainer, task, frames, ctx))
            result = trainer.fit(log_file)
        finally:
            if log_file is not None:
                log_file.close()
        # DDP's reducer holds gloo work objects: destroyed during interpreter shutdown, after the process
        # group, they aborted a rank now and then ("terminate called without an active exception")
        del trainer, model
    return result


# ---------------------------------------------------------------------------- data
def _samples(spec: DataSpec, task: str, config: FinetuneConfig, option: str) -> tuple[list[Sample], dict]:
    """The samples of a SPEC whose videos are on disk, and what identifies the data in settings.json."""
    split = load_split(spec, task, config.video_root)
    videos = {r.video for r in split.records}
    missing = split.missing_videos
    if len(missing) > MOST_FAILED * len(videos):
        raise TrainError(f"{option} {spec.text}: {len(missing)} of the {len(videos)} videos it names are not under "
                         f"{split.video_dir} (first: {missing[0]}); check --video-root")
    if missing:
        log.warning("%s: %d of %d videos are missing and their samples are skipped (first: %s)", option,
                    len(missing), len(videos), missing[0])
    samples = samples_of(split, task)
    if not samples:
        raise TrainError(f"{option} {spec.text}: no {task} samples in the {split.split} split")
    identity = {"annotation_file": str(Path(split.annotation_file).resolve()),
                "annotation_sha256": file_sha256(split.annotation_file),  # an answer edited in place changes it
                "split": split.split,
                "video_dir": str(Path(split.video_dir).resolve()) if split.video_dir is not None else None,
                "samples": len(samples)}
    return samples, identity


def _cached(samples: list[Any], frames: int, size: int, config: FinetuneConfig, ctx: DistContext,
            log_file: MetricsLog | None, what: str) -> tuple[list[Any], FrameCache, list[tuple[str, str]]]:
    """``--cache-clips``: decode every clip once; the samples (or clip groups) whose clip could be read,
    and the failures."""
    cache, failed = decode_once(samples, frames, size, config.workers, config.progress and ctx.is_main)
    clips = len(cache.frames) + len(failed)
    if len(failed) > MOST_FAILED * clips:
        raise TrainError(f"{len(failed)} of the {clips} {what} clips could not be decoded (first: {failed[0][1]}); "
                         "check the videos and --video-root")
    for path, error in failed:
        log.warning("%s clip skipped, it cannot be decoded: %s", what, error)
        if log_file is not None:
            log_file.failed_clip(0, path, error, what)
    _log(ctx, "%s: %d clips decoded once and kept in memory (%.0f MB)", what, len(cache.frames), cache.nbytes() / 2**20)
    return [s for s in samples if s in cache], cache, failed


def _trainer(config: FinetuneConfig, ctx: DistContext, files: RunFiles, model: nn.Module, task: str, frames: int,
             train: list[ClipGroup], val: list[Sample], log_file: MetricsLog | None) -> Trainer:
    from mammut_video.video import build_clip_transform

    v = model.config.vision
    cache = val_cache = None
    failed: list[tuple[str, str]] = []
    if config.cache_clips:
        train, cache, failed = _cached(train, frames, v.image_size, config, ctx, log_file, "training")
        if val:
            val, val_cache, _ = _cached(val, frames, v.image_size, config, ctx, log_file, "validation")
    augment = config.crop_scale < 1 or config.hflip
    transform = build_clip_transform(v.image_size, v.mean, v.std, train=augment, scale=(config.crop_scale, 1.0),
                                     hflip=config.hflip)
    dataset = TrainClips(train, transform, frames, config.seed, cache)
    trainer = Trainer(config, ctx, files, model, task, dataset, val, val_cache)
    trainer.failed_paths.update(path for path, _ in failed)
    return trainer


# ---------------------------------------------------------------------------- model
def _start_point(config: FinetuneConfig) -> dict[str, Any]:
    """``{"num_frames", "identity"}`` of the checkpoint or preset the run starts from (checked now)."""
    if config.checkpoint is not None:
        from mammut_video.checkpoint import read_checkpoint_config
        from mammut_video.eval.run import checkpoint_identity

        ckpt = Path(config.checkpoint)
        if not ckpt.exists():
            raise ConfigError(f"checkpoint {ckpt} not found")
        meta = read_checkpoint_config(ckpt)
        return {"num_frames": meta["model"].get("num_frames", 1), "identity": checkpoint_identity(ckpt.resolve())}
    from mammut_video.model.presets import get_preset

    return {"num_frames": get_preset(config.preset).num_frames, "identity": {"preset": config.preset}}


def _model(config: FinetuneConfig, ctx: DistContext, files: RunFiles, task: str, frames: int,
           train: list[Sample]) -> nn.Module:
    """The model to train: loaded from the checkpoint, or made from the preset (same weights on every rank)."""
    from mammut_video.model import create_model, load_model
    from mammut_video.model.presets import get_preset

    torch.manual_seed(config.seed)
    if config.checkpoint is not None:
        return load_model(config.checkpoint)
    overrides: dict[str, Any] = {"num_frames": frames}
    tokenizer = None
    if config.resolved("tokenizer") == "sentencepiece":
        context = get_preset(config.preset).text.context_length
        tokenizer = _vocabulary(config, ctx, files, task, train, context)
        overrides["tokenizer"] = {"type": "sentencepiece", "model_file": str(files.tokenizer.resolve())}
        overrides["text"] = {"vocab_size": tokenizer.vocab_size}
    torch.manual_seed(config.seed)
    model = create_model(config.preset, **overrides)
    if tokenizer is not None:
        model.tokenizer = tokenizer
    return model


def train_vocabulary(texts: list[str], prefix: Path, vocab_size: int, context_length: int) -> Any:
    """A SentencePiece BPE vocabulary of at most ``vocab_size`` pieces trained on ``texts``, saved as ``prefix.model``.

    BPE, not SentencePiece's default unigram: on a small QA corpus unigram stops at a few dozen pieces
    and spells "left" or "three" in 3-5 of them; BPE keeps every frequent word one token.
    """
    from mammut_video.text.sentence_piece import SentencePieceTokenizer

    return SentencePieceTokenizer.train(texts, prefix, vocab_size=vocab_size, model_type="bpe",
                                        hard_vocab_limit=False, context_length=context_length)


def _vocabulary(config: FinetuneConfig, ctx: DistContext, files: RunFiles, task: str, train: list[Sample],
                context: int) -> Any:
    """A SentencePiece vocabulary of the training texts (trained once, by rank 0; kept on resume)."""
    from mammut_video.text.sentence_piece import SentencePieceTokenizer

    def train_it() -> None:
        if config.resume and files.tokenizer.is_file():
            return
        tok = train_vocabulary(corpus(train, task), files.root / TOKENIZER_PREFIX, config.vocab_size, context)
        log.info("trained a SentencePiece vocabulary of %d pieces on the training texts: %s", tok.vocab_size,
                 files.tokenizer)

    ctx.on_main(train_it)
    return SentencePieceTokenizer(files.tokenizer, context_length=context)


def _ready_for_training(model: nn.Module, config: FinetuneConfig, frames: int, device: torch.device) -> None:
    """Freeze what is asked and what a step would not use (DDP waits for every trainable gradient),
    switch gradient checkpointing, move to the device, training mode."""
    model.lock(**{part: True for part in config.freeze})
    for _, p in model.unused_parameters(frames, contrastive=config.contrastive_weight > 0):
        p.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"--freeze {','.join(config.freeze)} leaves nothing to train")
    model.set_grad_checkpointing(config.grad_checkpointing)
    model.to(device).train()


def _resume_step(state: dict | None) -> int:
    return int(state["position"]["step"]) if state is not None else 0


def _summary(trainer: Trainer, task: str, frames: int, ctx: DistContext) -> str:
    from mammut_video.runtime.precision import default_precision

    cfg, g = trainer.config, trainer.geometry
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    length = (f"{trainer.total_steps} steps" if trainer.total_steps is not None else "until the time budget")
    budget = f", at most {cfg.max_time:.0f} s" if cfg.max_time is not None else ""
    groups = trainer.train_data.items
    unit = (f"{len(groups)} clips with {sum(len(gr.samples) for gr in groups)} questions" if task == "qa"
            else f"{len(groups)} captions")
    return (f"finetune {task}: {unit}, {g.steps_per_epoch} steps an epoch of batch "
            f"{g.batch_size} ({ctx.world_size} process(es) x {g.accum} micro-batch(es) of {g.micro}); {length}{budget}; "
            f"{frames} frames; lr {cfg.resolved('lr'):g}; {trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters "
            f"trained; {ctx.device.type}, {cfg.precision or default_precision(ctx.device)}; "
            f"validation: {len(trainer.val)} samples")


def _log(ctx: DistContext, message: str, *args: Any) -> None:
    if ctx.is_main:
        log.info(message, *args)
