"""Evaluation: VideoQA accuracy, caption metrics, retrieval metrics, and ``evaluate(config)``.

    from mammut_video.eval import EvalConfig, QAOptions, evaluate
    result = evaluate(EvalConfig("msrvtt-qa", checkpoint="ckpt/", data_root="~/data/msrvtt"))
    print(result.table())          # result.metrics, result.counts, result.failed_videos

Names load lazily so that the command line's ``--help`` does not pull in torch.
"""

from __future__ import annotations

from mammut_video._lazy import lazy_exports

_EXPORTS = {
    "EvalConfig": ".config", "QAOptions": ".config", "CaptionOptions": ".config", "RetrievalOptions": ".config",
    "evaluate": ".run", "EvalResult": ".run",
    "TASKS": ".registry", "TaskInfo": ".registry",
    "normalize_answer": ".vqa_normalize",
    "QAReference": ".qa_metrics", "qa_accuracy": ".qa_metrics",
    "caption_metrics": ".caption_metrics", "CaptionMetricsError": ".caption_metrics",
    "retrieval_metrics": ".retrieval_metrics",
    "read_predictions": ".predictions",
    "QATask": ".tasks", "CaptionTask": ".tasks", "RetrievalTask": ".tasks", "answer_questions": ".tasks",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
