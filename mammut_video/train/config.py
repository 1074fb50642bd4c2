"""Typed settings of a fine-tuning run: :class:`FinetuneConfig` and the two default recipes.

    import mammut_video as mv
    result = mv.finetune(mv.FinetuneConfig(train="data/train.jsonl", out="runs/qa", preset="mammut-video-tiny",
                                           val="data/val.jsonl", max_time="10m"))

Values are checked when the config is made (:class:`~mammut_video.errors.ConfigError`, one
line); files are checked when :func:`~mammut_video.train.finetune` runs. Options left at None
take the recipe of the starting point (:func:`FinetuneConfig.recipe`): a from-scratch recipe from
``preset`` (random weights), a fine-tuning recipe with a lower learning rate from ``checkpoint``.
Light on purpose (no torch): the command line builds ``--help`` from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from mammut_video.errors import ConfigError, check_int
from mammut_video.runtime.devices import default_workers
from mammut_video.runtime.precision import check_device_and_precision

TASKS = ("qa", "caption")
FREEZE_PARTS = ("tubes", "vision", "text")
CONTRASTIVE_KINDS = ("softmax", "focal")
TOKENIZERS = ("sentencepiece", "clip_bpe")
# SPEC prefix -> (task, dataset name of the loader)
BENCHMARKS = {"msrvtt-qa": ("qa", "msrvtt-qa"), "msvd-qa": ("qa", "msvd-qa"),
              "msrvtt-caption": ("caption", "msrvtt"), "msvd-caption": ("caption", "msvd")}
SPLIT_NAMES = ("train", "val", "validate", "valid", "validation", "dev", "test")
SPEC_HELP = ("a custom QA or caption file (.jsonl / .csv / .json, datasets/custom/README.md) or BENCHMARK:DATA_ROOT"
             "[:SPLIT] with BENCHMARK one of " + ", ".join(BENCHMARKS))


@dataclass(frozen=True)
class Recipe:
    """Defaults that fit a starting point; every one can be overridden."""

    lr: float
    weight_decay: float
    warmup: int  # optimizer steps of linear warm-up
    batch_size: int  # clips per optimizer step (QA: each with all its questions), over all processes
    epochs: int  # when neither steps, epochs nor max_time is given
    tokenizer: str | None  # trained / chosen for a preset; None: the checkpoint's own

    def describe(self) -> str:
        tok = f", tokenizer {self.tokenizer}" if self.tokenizer else ""
        return (f"lr {self.lr:g}, weight decay {self.weight_decay:g}, warm-up {self.warmup} steps, batch "
                f"{self.batch_size}, {self.epochs} epochs{tok}")


# from random weights (--preset): what trained the tiny model on the synthetic set in DESIGN.md §7
SCRATCH = Recipe(lr=1e-3, weight_decay=0.05, warmup=50, batch_size=32, epochs=30, tokenizer="sentencepiece")
# from a checkpoint: ten times lower, fewer and smaller batches (larger models)
FINETUNE = Recipe(lr=1e-4, weight_decay=0.05, warmup=50, batch_size=8, epochs=5, tokenizer=None)

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``600``, ``"600s"``, ``"10m"``, ``"1h30m"``, ``"1.5h"``; must be > 0."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.fullmatch(str(text).strip().lower())
        if not str(text).strip() or m is None or not any(m.groups()):
            raise ConfigError(f"max_time {text!r}: expected a duration such as 600, 600s, 10m, 1h30m")
        h, mins, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = h * 3600 + mins * 60 + s
    if not seconds > 0:
        raise ConfigError(f"max_time must be more than 0 seconds, got {text!r}")
    return seconds


def parse_freeze(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"none"``, ``"vision"``, ``"tubes,text"`` or a list -> the parts to freeze (sorted, unique)."""
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    parts = [p.strip() for p in parts if p.strip() and p.strip() != "none"]
    unknown = [p for p in parts if p not in FREEZE_PARTS]
    if unknown:
        raise ConfigError(f"freeze {', '.join(unknown)!s}: expected none or a comma list of {', '.join(FREEZE_PARTS)}")
    return tuple(sorted(set(parts)))


def _positive_float(value: object, name: str, allow_zero: bool = False) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if number < 0 or (number == 0 and not allow_zero) or number != number:
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return number


@dataclass
class FinetuneConfig:
    """One fine-tuning run. See ``mammut-video finetune --help`` for every option in words.

    ``train`` / ``val``: a SPEC, a custom QA or caption file (JSONL / CSV / JSON, videos relative
    to ``video_root``, default the file's folder) or a benchmark split ``msrvtt-qa:ROOT``,
    ``msvd-qa:ROOT``, ``msrvtt-caption:ROOT``, ``msvd-caption:ROOT`` with an optional ``:SPLIT``
    (default train for ``train``, val for ``val``). Start from ``checkpoint`` (a directory) or
    ``preset`` (random weights). ``task``: "qa" or "caption" (default: what the SPEC holds).
    Length: ``steps``, or ``epochs``, and/or ``max_time`` (seconds or "10m"); with ``max_time``
    alone the learning rate decays over that time. ``batch_size`` counts clips per optimizer step
    over all processes (QA: each clip with all its questions; captions: one caption each);
    ``grad_accum`` splits each process's share into that many micro-batches (same step, less memory).
    """

    train: str
    out: str | Path
    val: str | None = None
    video_root: str | Path | None = None
    checkpoint: str | Path | None = None
    preset: str | None = None
    task: str | None = None
    epochs: int | None = None
    steps: int | None = None
    max_time: float | str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup: int | None = None
    batch_size: int | None = None
    grad_accum: int = 1
    grad_clip: float = 1.0
    frames: int | None = None
    freeze: tuple[str, ...] | str | None = ()
    grad_checkpointing: bool = False
    precision: str | None = None
    contrastive_weight: float = 0.0
    contrastive: str = "softmax"
    tokenizer: str | None = None
    vocab_size: int = 1000
    cache_clips: bool = False
    crop_scale: float = 1.0
    hflip: bool = False
    val_every: int | None = None
    save_every: int | None = None
    workers: int = field(default_factory=default_workers)  # min(4, CPU cores)
    seed: int = 0
    device: str | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.preset is None):
            raise ConfigError("give one starting point: --checkpoint CKPT (fine-tune saved weights) or --preset NAME "
                              "(random weights)")
        if self.task is not None and self.task not in TASKS:
            raise ConfigError(f"task {self.task!r}: expected qa or caption")
        if self.epochs is not None and self.steps is not None:
            raise ConfigError("give --epochs or --steps, not both")
        for name in ("epochs", "steps", "warmup", "batch_size", "frames", "val_every", "save_every"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, check_int(value, name, minimum=0 if name == "warmup" else 1))
        self.grad_accum = check_int(self.grad_accum, "grad_accum")
        self.workers = check_int(self.workers, "workers", minimum=0)
        self.vocab_size = check_int(self.vocab_size, "vocab_size", minimum=16)
        self.seed = check_int(self.seed, "seed", minimum=0)
        if self.max_time is not None:
            self.max_time = parse_duration(self.max_time)
        for name in ("lr", "weight_decay", "grad_clip", "contrastive_weight"):
            if getattr(self, name) is not None:
                setattr(self, name, _positive_float(getattr(self, name), name, allow_zero=name != "lr"))
        if not 0 < self.crop_scale <= 1:
            raise ConfigError(f"crop_scale must be in (0, 1], got {self.crop_scale!r}")
        self.freeze = parse_freeze(self.freeze)
        if self.contrastive not in CONTRASTIVE_KINDS:
            raise ConfigError(f"contrastive {self.contrastive!r}: expected softmax or focal")
        if self.tokenizer is not None:
            if self.tokenizer not in TOKENIZERS:
                raise ConfigError(f"tokenizer {self.tokenizer!r}: expected sentencepiece or clip_bpe")
            if self.checkpoint is not None:
                raise ConfigError("--tokenizer chooses the vocabulary of a model made from --preset; a --checkpoint "
                                  "keeps its own tokenizer")
        check_device_and_precision(self.device, self.precision)
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: pass one of them")

    @property
    def recipe(self) -> Recipe:
        """The defaults of this starting point: :data:`SCRATCH` from a preset, :data:`FINETUNE` from a checkpoint."""
        return SCRATCH if self.preset is not None else FINETUNE

    def resolved(self, name: str) -> object:
        """An option's value, or the recipe's when it was left at None (``epochs``: only when nothing
        else bounds the run)."""
        value = getattr(self, name)
        if value is not None or not hasattr(self.recipe, name):
            return value
        if name == "epochs" and (self.steps is not None or self.max_time is not None):
            return None
        return getattr(self.recipe, name)

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def time_schedule(self) -> bool:
        """True when only ``max_time`` bounds the run: the learning rate then decays over the time budget."""
        return self.max_time is not None and self.steps is None and self.epochs is None

    def settings(self) -> dict:
        """What decides the run's results, recorded in settings.json (``--resume`` refuses other values).

        Left out: how the run is carried out (workers, device, progress, resume / overwrite) and
        ``max_time`` unless the learning rate follows it: a budget that a resumed run may change.
        """
        skip = {"out", "workers", "device", "progress", "resume", "overwrite"}
        if not self.time_schedule:
            skip.add("max_time")
        out: dict = {}
        for f in fields(self):
            if f.name not in skip:
                value = self.resolved(f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value
        return out
