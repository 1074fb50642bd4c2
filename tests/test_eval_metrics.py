"""VQA normalisation, QA accuracy and retrieval metrics on hand-computed examples."""

from __future__ import annotations

import pytest
import torch

from mammut_video.eval.qa_metrics import QAReference, answers_match, most_common_answer_accuracy, qa_accuracy
from mammut_video.eval.retrieval_metrics import retrieval_metrics
from mammut_video.eval.vqa_normalize import normalize_answer, process_punctuation


@pytest.mark.parametrize(
    "pred, answer",
    [
        ("Two.", "2"),
        ("two", "2"),
        ("a dog", "dog"),
        ("The Dog!", "dog"),
        ("an apple", "apple"),
        ("none", "0"),
        ("dog?", "dog"),
        ("  Cooking\n", "cooking"),
        ("dont", "don't"),
        ("1,000", "1000"),  # comma between digits is dropped, not spaced
    ],
)
def test_normalisation_matches(pred: str, answer: str) -> None:
    assert answers_match(pred, answer)


@pytest.mark.parametrize("pred, answer", [("dogs", "dog"), ("3", "2"), ("hot-dog", "hotdog"), ("2.5", "25")])
def test_normalisation_keeps_real_differences(pred: str, answer: str) -> None:
    assert not answers_match(pred, answer)


def test_punctuation_rules_of_official_eval() -> None:
    assert process_punctuation("hot-dog") == "hot dog"  # no space next to it: becomes a space
    assert process_punctuation("yes , no") == "yes  no"  # next to a space: removed
    assert process_punctuation("2.5") == "2.5"  # period before a digit stays
    assert normalize_answer("The 2 dogs.") == "2 dogs"


def test_accuracy_and_per_type_hand_computed() -> None:
    refs = [
        QAReference("1", "dog", "what"),
        QAReference("2", "two", "how"),
        QAReference("3", "man", "who"),
        QAReference("4", "cook", "what"),
        QAReference("5", "kitchen", "where"),
    ]
    preds = {"1": "a dog", "2": "2", "3": "woman", "4": "cook"}  # "5" missing: counts wrong
    m = qa_accuracy(refs, preds)
    assert m["correct"] == 3 and m["total"] == 5 and m["missing"] == 1
    assert m["accuracy"] == pytest.approx(60.0)
    assert m["per_type"]["what"] == {"accuracy": 100.0, "correct": 2, "total": 2}
    assert m["per_type"]["how"]["accuracy"] == 100.0
    assert m["per_type"]["who"]["accuracy"] == 0.0
    assert m["per_type"]["where"] == {"accuracy": 0.0, "correct": 0, "total": 1}


def test_all_missing_is_zero_not_error() -> None:
    m = qa_accuracy([QAReference("1", "dog", "what")], {})
    assert m["accuracy"] == 0.0 and m["missing"] == 1


def test_retrieval_hand_made_similarity() -> None:
    # text i should match video i. Ranks t->v: text0 1, text1 2, text2 3, text3 1.
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0],
            [0.8, 0.5, 0.1, 0.0],
            [0.7, 0.6, 0.3, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    m = retrieval_metrics(sim, ks=(1, 2, 10))
    t2v = m["text_to_video"]
    assert t2v["R@1"] == pytest.approx(50.0)
    assert t2v["R@2"] == pytest.approx(75.0)
    assert t2v["R@10"] == pytest.approx(100.0)
    assert t2v["median_rank"] == pytest.approx(1.5)
    assert t2v["mean_rank"] == pytest.approx(7 / 4)
    # v->t (columns): video0 rank 1, video1: texts 0.6>0.5 -> rank 2, video2: 0.3 top -> 1, video3 1
    v2t = m["video_to_text"]
    assert v2t["R@1"] == pytest.approx(75.0)
    assert v2t["mean_rank"] == pytest.approx(5 / 4)
    assert v2t["median_rank"] == pytest.approx(1.0)


def test_retrieval_several_texts_per_video_and_ties() -> None:
    # texts 0,1 -> video 0; text 2 -> video 1. A tie with a wrong video ranks below it.
    sim = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    m = retrieval_metrics(sim, text_to_video=[0, 0, 1], ks=(1,))
    assert m["text_to_video"]["R@1"] == pytest.approx(200 / 3)
    assert m["video_to_text"]["R@1"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="text_to_video"):
        retrieval_metrics(sim)


def test_most_common_answer_accuracy_per_group_after_normalisation():
    pairs = [("how", "Two"), ("how", "2"), ("how", "three"), ("what", "dog"), ("what", "cat"),
             ("what", "a cat"), ("what", "fish")]
    # "Two" and "2" are one answer once normalised (as eval scores them); "a cat" is "cat"
    assert most_common_answer_accuracy(pairs) == {"how": pytest.approx(200 / 3), "what": 50.0}
    assert most_common_answer_accuracy([]) == {}
