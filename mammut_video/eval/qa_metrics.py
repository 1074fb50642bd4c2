"""Open-ended VideoQA accuracy: exact match after VQA normalisation, overall and per type.

Accuracy is taken over ALL questions of the split: a question without a prediction (its clip
failed to decode, or the run was cut short) counts as wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mammut_video.eval.vqa_normalize import normalize_answer


@dataclass(frozen=True)
class QAReference:
    """One ground-truth question: ``key`` is its question id as a string; ``question_type`` as
    given by ``mammut_video.data.question_type`` (first word: what/who/how/when/where/other)."""

    key: str
    answer: str
    question_type: str


def answers_match(prediction: str, answer: str) -> bool:
    """Exact match after normalising both sides ("Two." matches "two" and "2")."""
    return normalize_answer(prediction) == normalize_answer(answer)


def qa_accuracy(references: Iterable[QAReference], predictions: Mapping[str, str]) -> dict:
    """Score ``predictions`` (key -> answer text) against every reference.

    Returns ``{"accuracy": %, "correct", "total", "missing", "per_type": {type: {"accuracy",
    "correct", "total"}}}``; accuracies are percentages over all references.
    """
    correct = total = missing = 0
    per_type: dict[str, list[int]] = {}
    for ref in references:
        pred = predictions.get(ref.key)
        if pred is None:
            missing += 1
        hit = int(pred is not None and answers_match(pred, ref.answer))
        correct += hit
        total += 1
        counts = per_type.setdefault(ref.question_type, [0, 0])
        counts[0] += hit
        counts[1] += 1
    return {
        "accuracy": _percent(correct, total),
        "correct": correct,
        "total": total,
        "missing": missing,
        "per_type": {
            t: {"accuracy": _percent(c, n), "correct": c, "total": n} for t, (c, n) in sorted(per_type.items())
        },
    }


def most_common_answer_accuracy(answers: Iterable[tuple[str, str]]) -> dict[str, float]:
    """(group, true answer) pairs -> per group, the accuracy (%) of always giving the group's most common
    answer (compared after normalisation): the level a QA model has to beat to show it looked at the video."""
    counts: dict[str, Counter] = {}
    for group, answer in answers:
        counts.setdefault(group, Counter())[normalize_answer(answer)] += 1
    return {g: _percent(c.most_common(1)[0][1], sum(c.values())) for g, c in counts.items()}


def _percent(num: int, den: int) -> float:
    return 100.0 * num / den if den else 0.0
