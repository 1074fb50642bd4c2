"""QA prompt and teacher-forcing batches: labels cover exactly the answer + EOT (or caption + EOT)."""

from __future__ import annotations

import pytest
import torch

import mammut_video  # noqa: F401
from mammut_video.text import (
    ANSWER_RESERVE,
    ClipBpeTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    build_caption_batch,
    build_qa_batch,
    format_question,
    qa_prompt_ids,
)

CORPUS = [
    "question: what is the dog doing? answer: running",
    "question: who is singing a song? answer: man",
    "question: how many people dance? answer: two",
    "a cat sleeps on a red sofa",
    "a boy rides a bike down the street",
] * 10


@pytest.fixture(scope="module", params=["clip", "sp"])
def tok(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    if request.param == "clip":
        return ClipBpeTokenizer()
    return SentencePieceTokenizer.train(CORPUS, tmp_path_factory.mktemp("spm") / "qa", vocab_size=48)


def test_format_question() -> None:
    assert format_question("  what is  the dog doing ") == "what is the dog doing?"
    assert format_question("who sings?") == "who sings?"
    with pytest.raises(ValueError):
        format_question("   ")


def test_qa_prompt_ids_layout(tok: Tokenizer) -> None:
    (prompt,) = qa_prompt_ids(tok, ["what is the dog doing"])
    assert prompt[0] == tok.sot_id and tok.eot_id not in prompt
    assert tok.decode(prompt) == "question: what is the dog doing? answer:"


def test_long_question_is_cut_from_the_left(tok: Tokenizer) -> None:
    question = "the dog " * 60 + "what is the man doing"
    (prompt,) = qa_prompt_ids(tok, [question], context_length=48)
    assert len(prompt) <= 48 - ANSWER_RESERVE
    prefix, suffix = tok.encode("question:"), tok.encode("answer:")
    assert prompt[: 1 + len(prefix)] == [tok.sot_id, *prefix]
    assert prompt[-len(suffix) :] == suffix
    end_of_question = tok.encode("the man doing?")
    assert prompt[-len(suffix) - len(end_of_question) : -len(suffix)] == end_of_question
    with pytest.raises(ValueError, match="no room"):
        qa_prompt_ids(tok, ["why?"], context_length=ANSWER_RESERVE + 3)


def test_qa_batch_labels_are_answer_and_eot(tok: Tokenizer) -> None:
    questions = ["what is the dog doing", "how many people dance?"]
    answers = ["running", "two"]
    input_ids, labels = build_qa_batch(tok, questions, answers, context_length=77)
    assert input_ids.shape == labels.shape == (2, 77)
    prompts = qa_prompt_ids(tok, questions, context_length=77)
    for row, (prompt, answer) in enumerate(zip(prompts, answers)):
        assert input_ids[row, : len(prompt)].tolist() == prompt
        supervised = labels[row] != -100
        target = labels[row][supervised].tolist()
        assert target == [*tok.encode(answer), tok.eot_id]
        assert tok.decode(target) == answer
        assert torch.equal(labels[row][supervised], input_ids[row][supervised])
        # supervised span starts right after the prompt; padding after it
        first = int(supervised.nonzero()[0])
        assert first == len(prompt)
        assert input_ids[row, first + len(target) :].eq(tok.pad_id).all()
    assert tok.batch_decode(input_ids)[0] == "question: what is the dog doing? answer: running"


def test_qa_batch_long_answer_keeps_eot(tok: Tokenizer) -> None:
    input_ids, labels = build_qa_batch(tok, ["who sings?"], ["a man " * 40], context_length=48)
    assert input_ids[0, -1] == tok.eot_id and labels[0, -1] == tok.eot_id
    with pytest.raises(ValueError, match="answer 0"):
        build_qa_batch(tok, ["who sings?"], ["  "])
    with pytest.raises(ValueError, match="2 questions but 1 answers"):
        build_qa_batch(tok, ["a?", "b?"], ["x"])


def test_caption_batch_labels(tok: Tokenizer) -> None:
    captions = ["a cat sleeps on a red sofa", "a boy rides"]
    input_ids, labels = build_caption_batch(tok, captions, context_length=48)
    assert torch.equal(input_ids, tok(captions, context_length=48))
    for row, caption in enumerate(captions):
        n = len(tok.encode(caption))
        assert labels[row, 0] == -100
        assert labels[row, 1 : n + 2].tolist() == [*tok.encode(caption), tok.eot_id]
        assert labels[row, n + 2 :].eq(-100).all()
        assert tok.decode(labels[row][labels[row] != -100]) == tok.decode(input_ids[row])
