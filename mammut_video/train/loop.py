"""``finetune(config)``: prepare the data, the model and the run directory, then train.

One optimizer step takes ``batch_size`` samples over all processes (each process ``batch_size /
world``, in ``grad_accum`` micro-batches). The token loss of a step is the mean over every
supervised token of the step, whichever process and micro-batch holds it: each micro-batch's
summed loss is divided by the step's token count over all processes (one small all-reduce before
the backward passes), times the world size that DDP's gradient averaging divides by. So N
processes, or K accumulation steps, give the gradient of one process holding the whole batch.
The contrastive loss (weight > 0) is taken per micro-batch over all processes' embeddings.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mammut_video.errors import ConfigError, MammutVideoError
from mammut_video.runtime.distributed import DistContext
from mammut_video.runtime.precision import autocast
from mammut_video.runtime.progress import Progress, progress
from mammut_video.train.config import FinetuneConfig
from mammut_video.train.data import FrameCache, Sample, TrainClips, epoch_loader, epoch_order, text_batch
from mammut_video.train.rundir import MetricsLog, RunFiles, rng_state, save_state, set_rng_state

log = logging.getLogger(__name__)

MOST_FAILED = 0.5  # a run stops when more than this share of the clips read so far failed
MIN_SEEN = 16  # ... once at least this many were read (or a whole epoch, or at the end of the run)
MAX_LOGIT_SCALE_LOG = math.log(100)


class TrainError(MammutVideoError):
    """A run that cannot go on (most clips unreadable, a batch that does not fit the set)."""


@dataclass
class FinetuneResult:
    """What :func:`finetune` did. On ranks other than 0 of a torchrun group ``val`` / ``best`` stay empty."""

    out_dir: Path
    task: str
    steps: int
    epochs: float
    # "steps", "epochs", "max_time"; "finished" (a resumed run that had already ended) or "time_spent"
    # (a resumed run stopped by a time budget that this one's --max-time does not extend)
    stopped: str
    seconds: float
    samples_per_s: float
    train_loss: float | None
    failed_clips: int
    val: dict[str, Any] = field(default_factory=dict)  # the last validation
    best: dict[str, Any] = field(default_factory=dict)  # {"step", metric: value} of best/

    @property
    def files(self) -> RunFiles:
        return RunFiles(self.out_dir)


@dataclass
class Geometry:
    """How samples are cut into steps: ``per_rank`` samples a process per step, in ``accum`` micro-batches."""

    batch_size: int
    world: int
    accum: int
    samples: int

    def __post_init__(self) -> None:
        if self.batch_size % (self.world * self.accum):
            processes = f"{self.world} process" + ("es" if self.world > 1 else "")
            raise ConfigError(f"batch size {self.batch_size} does not split into {processes} x {self.accum} "
                              f"accumulation steps: choose a multiple of {self.world * self.accum}")

    @property
    def per_rank(self) -> int:
        return self.batch_size // self.world

    @property
    def micro(self) -> int:
        return self.per_rank // self.accum

    @property
    def steps_per_epoch(self) -> int:
        steps = (self.samples // self.world) // self.per_rank
        if steps == 0:
            raise TrainError(f"the training set has {self.samples} samples, fewer than one batch of {self.batch_size}: "
                             "lower --batch-size")
        return steps


@dataclass
class Position:
    """Where the run is: optimizer steps done, the epoch and the steps done in it, training seconds."""

    step: int = 0
    epoch: int = 0
    epoch_step: int = 0
    elapsed: float = 0.0
    seen: int = 0  # samples read (all processes), failed ones included
    failed: int = 0  # samples read whose clip could not be decoded
    finished: bool = False


class Trainer:
    """The optimisation loop over prepared data and model (see the module docstring)."""

    def __init__(self, config: FinetuneConfig, ctx: DistContext, files: RunFiles, model: nn.Module, task: str,
                 train: TrainClips, val: list[Sample], val_cache: FrameCache | None) -> None:
        from mammut_video.model.losses import MammutLoss
        from mammut_video.train.optim import build_optimizer, build_schedule

        self.config, self.ctx, self.files, self.model, self.task = config, ctx, files, model, task
        self.train_data, self.val, self.val_cache = train, val, val_cache
        self.geometry = Geometry(int(config.resolved("batch_size")), ctx.world_size, config.grad_accum, len(train))
        self.total_steps = self._total_steps()
        self.optimizer = build_optimizer(model, float(config.resolved("lr")), float(config.resolved("weight_decay")))
        self.schedule = build_schedule(self.optimizer, int(config.resolved("warmup")), self.total_steps)
        precision = config.precision
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")
        self.contrastive = MammutLoss(caption_weight=0.0, contrastive_weight=1.0, contrastive=config.contrastive) \
            if config.contrastive_weight > 0 else None
        self.ddp = self._wrap(model)
        self.position = Position()
        self.last_check = (0, 0.0)  # (step, elapsed) of the last epoch-end validation and save
        self.best: dict[str, Any] = {}
        self.last_val: dict[str, Any] = {}
        self.failed_paths: set[str] = set()  # distinct clips that could not be decoded
        self.val_failed_paths: set[str] = set()  # ... in validation (warned once a run)
        self.first_failure: str | None = None
        self.metric = "val_accuracy" if task == "qa" else "val_cider"
        self.text_trained = self._text_embedding_trained(getattr(model, "provenance", None) or {})

    # ------------------------------------------------------------------ set-up
    def _total_steps(self) -> int | None:
        cfg = self.config
        if cfg.steps is not None:
            return cfg.steps
        epochs = cfg.resolved("epochs")
        return None if epochs is None else int(epochs) * self.geometry.steps_per_epoch

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.ctx.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def state_dict(self) -> dict[str, Any]:
        return {"position": vars(self.position).copy(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_state(), "best": self.best, "val": self.last_val,
                "failed_paths": sorted(self.failed_paths), "world_size": self.ctx.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = Position(**state["position"])
        self.last_check = (self.position.step, self.position.elapsed)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.best, self.last_val = state["best"], state["val"]
        self.failed_paths = set(state["failed_paths"])

    # ------------------------------------------------------------------ the loop
    def fit(self, log_file: MetricsLog | None) -> FinetuneResult:
        """Train until the step, epoch or time budget; validate and save on the way and at the end."""
        cfg, pos = self.config, self.position
        started, start_elapsed = time.monotonic(), pos.elapsed
        self.log_file = log_file
        if pos.finished and self._stop_reason() is None:
            pos.finished = False  # an earlier run's time budget stopped it; this one's (or none) leaves steps to do
        bar = self._bar()
        stopped = None
        if pos.finished:
            stopped = "time_spent" if self.total_steps is not None and pos.step < self.total_steps else "finished"
        last_loss = None
        self.train_seconds, self.train_samples = 0.0, 0  # optimizer steps of this call only
        while stopped is None:
            for micro_batches, waited in self._epoch_batches():
                stopped = self._stop_reason()
                if stopped:
                    break
                record = self._step(micro_batches, waited)
                pos.elapsed = self._agreed(start_elapsed + time.monotonic() - started)
                last_loss = record.get("loss", last_loss)
                self._after_step(record, bar)
            else:
                pos.epoch, pos.epoch_step = pos.epoch + 1, 0
                if cfg.val_every is None and not self._stop_reason() and self._epoch_check_due():
                    self._checkpoint(validate=True)
                continue
            break
        bar.close()
        if not pos.finished:
            self._check_failures(final=True)  # a short run on a mostly broken set must not end as a success
            pos.finished = True
            self._checkpoint(validate=True)
        return FinetuneResult(self.files.root.resolve(), self.task, pos.step,
                              self._epochs(), stopped,
                              pos.elapsed, self.train_samples / self.train_seconds if self.train_seconds else 0.0,
                              last_loss, len(self.failed_paths), self.last_val, self.best)

    def _epochs(self) -> float:
        """Epochs trained so far, the current one as a fraction (a record's and the result's ``epoch``)."""
        pos = self.position
        return round(pos.epoch + pos.epoch_step / self.geometry.steps_per_epoch, 4)

    def _bar(self) -> Progress:
        enabled = self.config.progress and self.ctx.is_main
        self.bar_seconds = int(self.position.elapsed)
        if self.total_steps is None:
            bar = progress(int(math.ceil(self.config.max_time or 0)), "finetune", "second", enabled)
            bar.update(self.bar_seconds)
        else:
            bar = progress(self.total_steps, "finetune", "step", enabled)
            bar.update(self.position.step)
        return bar

    def _epoch_check_due(self) -> bool:
        """Without ``--val-every``, validate and save at the end of an epoch, but at most about ten times a
        run: on a small set an epoch takes seconds, and a time-bounded run would spend its budget validating."""
        pos, cfg = self.position, self.config
        last_step, last_elapsed = self.last_check
        if cfg.max_time is not None:
            due = pos.elapsed - last_elapsed >= float(cfg.max_time) / 10
        elif self.total_steps is not None:
            due = pos.step - last_step >= self.total_steps / 10
        else:
            due = True
        if due:
            self.last_check = (pos.step, pos.elapsed)
        return due

    def _stop_reason(self) -> str | None:
        pos, cfg = self.position, self.config
        if self.total_steps is not None and pos.step >= self.total_steps:
            return "steps" if cfg.steps is not None else "epochs"
        if cfg.max_time is not None and pos.elapsed >= float(cfg.max_time):
            return "max_time"
        return None

    def _epoch_batches(self):
        """This epoch's remaining steps, each a list of ``accum`` micro-batches (collated clips) and the
        seconds spent waiting for them (decoding not done ahead by the loader's workers)."""
        g, pos = self.geometry, self.position
        order = epoch_order(self.train_data, pos.epoch, self.config.seed, self.ctx.rank, g.world)
        order = order[pos.epoch_step * g.per_rank: g.steps_per_epoch * g.per_rank]
        self.train_data.set_epoch(pos.epoch)
        if not order:
            return
        started = time.perf_counter()  # the first step also waits for the loader's workers to start
        loader = iter(epoch_loader(self.train_data, order, g.micro, self.config.workers))
        for _ in range(pos.epoch_step, g.steps_per_epoch):
            micro_batches = [next(loader) for _ in range(g.accum)]
            yield micro_batches, time.perf_counter() - started
            started = time.perf_counter()  # the trainer asks for the next step

    def _agreed(self, value: float) -> float:
        """The mean of ``value`` over the processes, so that every one takes the same time decisions."""
        if not self.ctx.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.ctx.device)
        torch.distributed.all_reduce(t)
        return float(t) / self.ctx.world_size

    def _after_step(self, record: dict[str, Any], bar: Progress) -> None:
        cfg, pos = self.config, self.position
        if self.log_file is not None:
            self.log_file.write(record)
        if self.total_steps is None:  # a time budget: the bar counts seconds
            bar.update(int(pos.elapsed) - self.bar_seconds)
            self.bar_seconds = int(pos.elapsed)
        else:
            bar.update(1)
        bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}", samples_s=f"{record['samples_per_s']:.1f}")
        self._check_failures()
        at_end = self._stop_reason() is not None
        if cfg.val_every is not None and pos.step % cfg.val_every == 0 and not at_end:
            self._checkpoint(validate=True)
        elif cfg.save_every is not None and pos.step % cfg.save_every == 0 and not at_end:
            self._checkpoint(validate=False)

    # ------------------------------------------------------------------ one step
    def _step(self, micro_batches: list[dict[str, Any]], waited: float) -> dict[str, Any]:
        """One optimizer step over this process's micro-batches, ``waited`` seconds after asking the loader
        for them; returns its ``metrics.jsonl`` record."""
        started = time.perf_counter()
        cfg, ctx, pos = self.config, self.ctx, self.position
        prepared = [self._prepare(b) for b in micro_batches]
        local = [sum(p["tokens"] for p in prepared), sum(p["samples"] for p in prepared),
                 sum(len(p["failed"]) for p in prepared), sum(p.get("texts", 0) for p in prepared)]
        totals = self._sum(local + [float(p["samples"] == 0) for p in prepared])
        tokens, samples, failed, texts = (int(v) for v in totals[:4])
        # a micro-batch whose clips all failed on every process is left out by all; where only some
        # processes lost theirs, those run a stand-in that weighs nothing, since under DDP every process
        # runs every micro-batch (the gradients are reduced together). No micro-batch left: no update.
        kept = [p if p["samples"] else self._stand_in()
                for p, empty_on in zip(prepared, totals[4:]) if empty_on < ctx.world_size]
        caption_sum = contrastive_sum = 0.0
        for i, part in enumerate(kept):
            sync = i == len(kept) - 1 or not ctx.distributed
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                c_sum, c_loss = self._backward(part, tokens)
            caption_sum, contrastive_sum = caption_sum + c_sum, contrastive_sum + c_loss
        grad_norm = self._update() if kept else None
        caption_sum = self._sum([caption_sum])[0]
        pos.step, pos.epoch_step = pos.step + 1, pos.epoch_step + 1
        pos.seen, pos.failed = pos.seen + samples + failed, pos.failed + failed
        self._report_failures(prepared, failed)
        seconds = time.perf_counter() - started
        self.train_seconds, self.train_samples = self.train_seconds + seconds, self.train_samples + samples
        record: dict[str, Any] = {"kind": "train", "step": pos.step,
                                  "epoch": self._epochs(),
                                  "lr": self.optimizer.param_groups[0]["lr"], "samples": samples, "texts": texts,
                                  "samples_per_s": samples / seconds, "texts_per_s": texts / seconds,
                                  "step_s": round(seconds, 4), "data_s": round(waited, 4),
                                  "failed_samples": pos.failed,
                                  "failed_clips": len(self.failed_paths)}
        if kept:
            record["caption_loss"] = caption_sum / max(tokens, 1)
            record["loss"] = record["caption_loss"]
            if self.contrastive is not None:
                record["contrastive_loss"] = contrastive_sum / len(kept)
                record["loss"] += cfg.contrastive_weight * record["contrastive_loss"]
            record["grad_norm"] = grad_norm
        else:
            record["skipped"] = "every clip of this step failed to decode"
        if kept:  # a step whose clips all failed made no update: the schedule waits too
            self.schedule.lr_lambdas[0].time_fraction = pos.elapsed / float(cfg.max_time or 1)
            self.schedule.step()
        return record

    def _prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        model = self.model
        if batch["video"] is None:
            return {"samples": 0, "tokens": 0, "failed": batch["failed"]}
        ids, labels, rows = text_batch(model.tokenizer, batch["items"], self.task, model.config.text.context_length)
        device = self.ctx.device
        return {"video": batch["video"].to(device, non_blocking=True), "ids": ids.to(device),
                "labels": labels.to(device), "rows": rows, "samples": len(batch["items"]), "texts": sum(rows),
                "failed": batch["failed"], "tokens": int((labels[:, 1:] != -100).sum())}

    def _stand_in(self) -> dict[str, Any]:
        """A micro-batch of one blank clip and a one-token text, with weight 0: what a process whose clips
        all failed runs under DDP, so that it takes part in the gradient reduction adding nothing."""
        device, tok = self.ctx.device, self.model.tokenizer
        size, channels = self.model.config.vision.image_size, self.model.visual.trunk.patch_embed.proj.in_channels
        return {"video": torch.zeros(1, channels, self.train_data.num_frames, size, size, device=device),
                "ids": torch.tensor([[tok.sot_id, tok.eot_id]], device=device),
                "labels": torch.tensor([[-100, tok.eot_id]], device=device), "rows": [1],
                "samples": 0, "texts": 0, "failed": [], "tokens": 0, "weight": 0.0}

    def _backward(self, part: dict[str, Any], step_tokens: int) -> tuple[float, float]:
        """Forward and backward of one micro-batch; returns its summed token loss and contrastive loss."""
        from mammut_video.model.losses import caption_loss

        cfg, world = self.config, self.ctx.world_size
        with autocast(self.ctx.device, cfg.precision):
            out = self.ddp(part["video"], part["ids"], part["labels"], contrastive=self.contrastive is not None,
                           rows=part["rows"])
            weight = part.get("weight", 1.0)  # 0 for a stand-in
            token_sum = caption_loss(out["logits"], out["targets"], reduction="sum") * weight
            loss = token_sum * (world / max(step_tokens, 1))
            contrastive = 0.0
            if self.contrastive is not None:
                # a stand-in adds no rows to the batch the loss gathers from every process; its loss over the
                # others' rows (held without gradient) still reaches the temperature, as on every process
                pairs = slice(None) if weight else slice(0, 0)
                c = self.contrastive(out["image_features"][pairs], out["text_features"][pairs], out["logit_scale"],
                                     None, None, out.get("logit_bias"))["loss"]
                loss = loss + c * (cfg.contrastive_weight * world / cfg.grad_accum)
                contrastive = float(c.detach())  # the loss over every process's rows: the same everywhere
        self.scaler.scale(loss).backward()
        return float(token_sum.detach()), contrastive

    def _update(self) -> float:
        """Clip, step, and keep ``logit_scale`` within CLIP's range; returns the gradient norm before clipping."""
        self.scaler.unscale_(self.optimizer)
        if self.ctx.distributed and self.contrastive is not None:
            # the contrastive term is scaled by the world size so that the embeddings, whose gradient each
            # process holds for its own rows only, get the whole of it after DDP's mean; the temperature and
            # bias see every logit on every process, so for them that factor is too much
            for p in (self.model.logit_scale, getattr(self.model, "logit_bias", None)):
                if p is not None and p.grad is not None:
                    p.grad.div_(self.ctx.world_size)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip or float("inf")))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE_LOG)
        return norm

    def _sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the processes (float64, one all-reduce)."""
        if not self.ctx.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.ctx.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    # ------------------------------------------------------------------ failed clips
    def _report_failures(self, prepared: list[dict[str, Any]], failed: int) -> None:
        if failed == 0:
            return
        mine = [(path, error) for p in prepared for _, path, error in p["failed"]]
        everyone = self.ctx.gather(mine)  # every process learns every failure: same counts, same decisions
        self.first_failure = self.first_failure or everyone[0][1]
        for path, error in everyone:
            new = path not in self.failed_paths
            self.failed_paths.add(path)
            if self.log_file is not None:
                self.log_file.failed_clip(self.position.step, path, error, "training")
                if new:
                    log.warning("skipped a clip that cannot be decoded (%d so far): %s", len(self.failed_paths), error)

    def _check_failures(self, final: bool = False) -> None:
        """Stop when more than half of the clips read failed: once ``MIN_SEEN`` clips or a whole epoch
        were read (fewer clips say little about the set), and at the end of the run whatever was read."""
        pos, g = self.position, self.geometry
        enough = final or pos.seen >= min(MIN_SEEN, g.steps_per_epoch * g.batch_size)
        if enough and pos.failed > MOST_FAILED * pos.seen:
            first = self.first_failure or "see metrics.jsonl"
            raise TrainError(f"{pos.failed} of the {pos.seen} training clips read so far could not be decoded "
                             f"(first: {first}); stopping. Check the videos and --video-root")

    # ------------------------------------------------------------------ validation and checkpoints
    def _checkpoint(self, validate: bool) -> None:
        """Validate (when asked and there is a validation set), then save last/ (+ best/) and the state."""
        def work() -> None:
            if validate and self.val:
                self._validate()
            self._save()
            if validate and self.log_file is not None:  # without --val too: the training loss alone
                from mammut_video.train.curves import draw_curves

                draw_curves(self.log_file.records, self.files.curves, self.metric)

        self.ctx.on_main(work)

    def _validate(self) -> None:
        from mammut_video.train.validate import validate

        cfg = self.config
        started = time.monotonic()
        result, failures = validate(self.model, self.val, self.task, frames=self.train_data.num_frames,
                                    batch_size=max(1, self.geometry.micro), workers=cfg.workers,
                                    device=self.ctx.device, precision=cfg.precision, cache=self.val_cache)
        self._report_val_failures(failures)
        record = {"kind": "val", "step": self.position.step, "epoch": self._epochs(), **result,
                  "seconds": round(time.monotonic() - started, 2)}
        self.last_val = record
        if self.log_file is not None:
            self.log_file.write(record)
        log.info("validation at step %d: loss %.4f, %s %.2f", record["step"], record["val_loss"],
                 self.metric.removeprefix("val_"), record[self.metric])
        if not self.best or record[self.metric] > self.best[self.metric]:
            self.best = {"step": record["step"], self.metric: record[self.metric]}
            self._save_checkpoint(self.files.best)

    def _report_val_failures(self, failures: list[tuple[str, str]]) -> None:
        """Warn about (and log) each validation clip that could not be decoded, once a run; stop when more
        than half of them fail, as ``--cache-clips`` does when it decodes them at the start."""
        from mammut_video.train.validate import val_clips

        for path, error in failures:
            if path in self.val_failed_paths:
                continue
            self.val_failed_paths.add(path)
            log.warning("validation clip skipped, it cannot be decoded (its %s scored as wrong): %s",
                        "questions" if self.task == "qa" else "captions", error)
            if self.log_file is not None:
                self.log_file.failed_clip(self.position.step, path, error, "validation")
        clips = len(val_clips(self.val))
        if failures and len(failures) > MOST_FAILED * clips:
            self._save()  # the training done so far is kept: --resume continues once the clips are mended
            raise TrainError(f"{len(failures)} of the {clips} validation clips could not be decoded "
                             f"(first: {failures[0][1]}); stopping with the model so far in {self.files.last}. "
                             "Check the videos and --video-root")

    def _save(self) -> None:
        self._save_checkpoint(self.files.last)
        save_state(self.files.state, self.state_dict())

    def _text_embedding_trained(self, start: dict[str, Any]) -> bool | None:
        """The saved checkpoints' ``text_embedding_trained``: True when this run trains the contrastive
        pass, otherwise what the start had (False from a preset; None when a checkpoint does not say)."""
        from mammut_video.checkpoint.pretrained import text_embedding_trained

        if self.config.contrastive_weight > 0:
            return True
        return False if self.config.preset is not None else text_embedding_trained(start)

    def _save_checkpoint(self, path: Path) -> None:
        from mammut_video.checkpoint import save_pretrained

        cfg = self.config
        start = {"preset": cfg.preset} if cfg.preset is not None else {"checkpoint": str(cfg.checkpoint)}
        provenance = {"source": "mammut-video",
                      "finetune": {"step": self.position.step, "task": self.task, "train": cfg.train, **start,
                                   "contrastive_weight": float(cfg.contrastive_weight),
                                   "text_embedding_trained": self.text_trained}}
        save_pretrained(self.model, path, provenance=provenance)
