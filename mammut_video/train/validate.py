"""Validation during fine-tuning: teacher-forced loss, and accuracy (QA) or CIDEr (captions).

Each clip is decoded once per validation (or served from ``--cache-clips``) with the evaluation
transform and uniform frames, and encoded for all its questions together; answers are generated
greedily as ``mammut-video eval`` does (``eval.tasks.answer_questions``), so the accuracy seen here
is the one the evaluation will report on the same split. A clip that cannot be read counts its
questions wrong; the trainer warns about it and stops when more than half of the clips fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mammut_video.data.clips import ClipDataset, make_loader
from mammut_video.data.records import clip_key
from mammut_video.model.losses import caption_loss
from mammut_video.runtime.precision import autocast
from mammut_video.train.data import FrameCache, Sample, text_batch


@dataclass
class ValClip:
    """One clip of the validation split and the indices of its samples."""

    video: Any
    start: float | None
    end: float | None
    samples: list[int] = field(default_factory=list)


def val_clips(samples: Sequence[Sample]) -> list[ValClip]:
    clips: dict[tuple, ValClip] = {}
    for i, s in enumerate(samples):
        key = clip_key(s.video, s.start, s.end)
        clips.setdefault(key, ValClip(s.video, s.start, s.end)).samples.append(i)
    return list(clips.values())


@torch.no_grad()
def validate(model: Any, samples: Sequence[Sample], task: str, *, frames: int, batch_size: int, workers: int,
             device: torch.device, precision: str | None,
             cache: FrameCache | None = None) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``{"val_loss", "val_accuracy" | "val_cider", ["val_per_type"], "val_failed_clips"}`` on ``samples``,
    and the clips that could not be decoded as (path, error) pairs."""
    from mammut_video.eval.qa_metrics import QAReference, qa_accuracy

    clips = val_clips(samples)
    dataset = ClipDataset(clips, transform=model.clip_transform(), num_frames=frames, reader=cache)
    loss_sum, tokens = 0.0, 0
    failures: list[tuple[str, str]] = []
    predictions: dict[str, str] = {}
    was_training = model.training
    model.eval()
    try:
        for batch in make_loader(dataset, batch_size, workers):
            failures += [(str(path), str(error)) for _, path, error in batch["failed"]]
            if batch["video"] is None:
                continue
            video = batch["video"].to(device)
            batch_clips = [clips[item["index"]] for item in batch["items"]]
            items = [{"samples": [samples[i] for i in clip.samples]} for clip in batch_clips]
            ids, labels, rows = text_batch(model.tokenizer, items, task, model.config.text.context_length)
            with autocast(device, precision):
                out = model(video, ids.to(device), labels.to(device), contrastive=False, rows=rows)
                loss_sum += float(caption_loss(out["logits"], out["targets"], reduction="sum"))
                tokens += int(out["targets"].numel())
                predictions.update(_predict(model, video, batch_clips, samples, task))
    finally:
        model.train(was_training)
    result: dict[str, Any] = {"val_loss": loss_sum / max(tokens, 1), "val_failed_clips": len(failures)}
    if task == "qa":
        refs = [QAReference(str(s.question_id), s.answer, s.question_type) for s in samples]  # type: ignore[union-attr]
        scores = qa_accuracy(refs, predictions)
        result["val_accuracy"] = scores["accuracy"]
        result["val_per_type"] = {t: m["accuracy"] for t, m in scores["per_type"].items()}
    else:
        result["val_cider"] = _cider(samples, predictions)
    return result, failures


def _predict(model: Any, video: torch.Tensor, clips: list[ValClip], samples: Sequence[Sample],
             task: str) -> dict[str, str]:
    """Greedy answers keyed by question id, or one caption per clip keyed by video id."""
    from mammut_video.eval.tasks import CAPTION_MAX_NEW_TOKENS, QA_MAX_NEW_TOKENS, answer_questions

    if task == "qa":
        rows = [(c, samples[i]) for c, clip in enumerate(clips) for i in clip.samples]
        answers = answer_questions(model, video, [c for c, _ in rows], [s.question for _, s in rows],  # type: ignore[union-attr]
                                   max_new_tokens=QA_MAX_NEW_TOKENS)
        return {str(s.question_id): a for (_, s), a in zip(rows, answers)}  # type: ignore[union-attr]
    captions = model.caption(video, max_new_tokens=CAPTION_MAX_NEW_TOKENS)
    return {str(samples[clip.samples[0]].video_id): c for clip, c in zip(clips, captions)}


def _cider(samples: Sequence[Sample], predictions: dict[str, str]) -> float:
    """CIDEr (x100) of one caption per clip against all the clip's captions (Java, pycocoevalcap)."""
    from mammut_video.eval.caption_metrics import caption_metrics

    refs: dict[str, list[str]] = {}
    for s in samples:
        refs.setdefault(str(s.video_id), []).append(s.caption)  # type: ignore[union-attr]
    return 100 * caption_metrics(refs, predictions, meteor=False)["CIDEr"]
