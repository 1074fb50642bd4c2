"""Typed settings of an evaluation: :class:`EvalConfig` and each task kind's options.

    import mammut_video as mv
    result = mv.evaluate(mv.EvalConfig("msrvtt-qa", checkpoint="ckpt/", data_root="~/data/msrvtt",
                                       options=mv.QAOptions(protocol="rank")))
    print(result.table())

Values are checked when the config is made (:class:`~mammut_video.errors.ConfigError`, one line);
files and folders are checked when :func:`~mammut_video.eval.evaluate` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from mammut_video.errors import ConfigError, check_int, require_checkpoint
from mammut_video.eval.registry import task_info
from mammut_video.runtime.devices import default_workers
from mammut_video.runtime.precision import check_device_and_precision

QA_PROTOCOLS = ("generate", "rank")


@dataclass
class QAOptions:
    """VideoQA. ``protocol``: "generate" decodes an open-ended answer greedily; "rank" scores every
    candidate answer (``answer_list``, default: every answer of the training split) by decoder
    likelihood. ``question_batch``: questions decoded together (generate); ``rank_batch``:
    (question, candidate) rows per decoder pass (rank)."""

    protocol: str = "generate"
    answer_list: str | Path | None = None
    question_batch: int = 64
    rank_batch: int = 256

    def __post_init__(self) -> None:
        if self.protocol not in QA_PROTOCOLS:
            raise ConfigError(f"protocol {self.protocol!r}: expected generate or rank")
        if self.answer_list is not None and self.protocol != "rank":
            raise ConfigError("--answer-list gives the candidates of --protocol rank: pass --protocol rank too, "
                              "or leave --answer-list out")
        self.question_batch = check_int(self.question_batch, "question_batch")
        self.rank_batch = check_int(self.rank_batch, "rank_batch")


@dataclass
class CaptionOptions:
    """Captioning. ``meteor``: compute METEOR (its Java start-up takes ~10 s)."""

    meteor: bool = True


@dataclass
class RetrievalOptions:
    """Retrieval (no options yet: contrastive embeddings, every caption against every video)."""


TaskOptions = Union[QAOptions, CaptionOptions, RetrievalOptions]
OPTIONS_BY_KIND: dict[str, type] = {"qa": QAOptions, "caption": CaptionOptions, "retrieval": RetrievalOptions}


@dataclass
class EvalConfig:
    """One evaluation: a task of :data:`mammut_video.eval.registry.TASKS` on a checkpoint.

    Data: ``data_root`` (searched for the annotations and videos) or ``annotations`` (+ ``videos``).
    ``limit``: only the first N items. ``frames``: default the checkpoint's. ``device``: cpu,
    cuda, cuda:N or None (CUDA when available). ``precision``: fp32, bf16 or fp16 autocast, None
    for the device's default (fp32 on the CPU, bf16 on CUDA). ``compile``: torch.compile the
    encoder and the decoder's cached step (same outputs; the first batches pay the compilation).
    ``out``: default ``eval/{task}-{split}``.
    ``resume`` continues a run in ``out``; ``overwrite`` discards it. ``options``: the task kind's
    options (:class:`QAOptions`, :class:`CaptionOptions`, :class:`RetrievalOptions`), default theirs.
    """

    task: str
    checkpoint: str | Path | None = None
    data_root: str | Path | None = None
    split: str = "test"
    annotations: str | Path | None = None
    videos: str | Path | None = None
    limit: int | None = None
    frames: int | None = None
    device: str | None = None
    precision: str | None = None
    compile: bool = False
    batch_size: int = 8
    workers: int = field(default_factory=default_workers)  # min(4, CPU cores)
    out: str | Path | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    options: TaskOptions | None = field(default=None)

    def __post_init__(self) -> None:
        info = task_info(self.task)
        info.check_split(self.split)
        kind_options = OPTIONS_BY_KIND[info.kind]
        if self.options is None:
            self.options = kind_options()
        elif not isinstance(self.options, kind_options):
            raise ConfigError(f"{self.task} takes {kind_options.__name__}, got {type(self.options).__name__}")
        for name in ("limit", "frames"):
            if getattr(self, name) is not None:
                setattr(self, name, check_int(getattr(self, name), name))
        self.batch_size = check_int(self.batch_size, "batch_size")
        self.workers = check_int(self.workers, "workers", minimum=0)
        check_device_and_precision(self.device, self.precision)
        require_checkpoint(self.checkpoint)
        if self.data_root is None and self.annotations is None:
            raise ConfigError("pass --data-root DIR (or --annotations FILE and --videos DIR)")

    @property
    def kind(self) -> str:
        return task_info(self.task).kind

    @property
    def out_dir(self) -> Path:
        return Path(self.out if self.out is not None else f"eval/{self.task}-{self.split}")
