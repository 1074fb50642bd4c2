"""Evaluation: VideoQA accuracy, caption metrics, retrieval metrics and the shared eval loop.

Names load lazily so that ``mammut-video --help`` (which imports ``mammut_video.eval.cli``)
does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "normalize_answer": "mammut_video.eval.vqa_normalize",
    "QAReference": "mammut_video.eval.qa_metrics",
    "qa_accuracy": "mammut_video.eval.qa_metrics",
    "caption_metrics": "mammut_video.eval.caption_metrics",
    "retrieval_metrics": "mammut_video.eval.retrieval_metrics",
    "read_predictions": "mammut_video.eval.predictions",
    "PredictionWriter": "mammut_video.eval.predictions",
    "init_distributed": "mammut_video.eval.distributed",
    "run_eval": "mammut_video.eval.runner",
    "QATask": "mammut_video.eval.tasks",
    "CaptionTask": "mammut_video.eval.tasks",
    "RetrievalTask": "mammut_video.eval.tasks",
    "answer_questions": "mammut_video.eval.tasks",
    "evaluate": "mammut_video.eval.command",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mammut_video.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
