"""The QA prompt and the (input_ids, labels) batches for QA and captioning.

VideoQA is open-ended generation: the decoder reads ``SOT + "question: {question} answer:"``
and generates the answer after it. The template is fixed because training, ``model.answer()``
and the eval ranking protocol must all put the answer in the same place: the loss is taken on
the answer tokens (and the EOT that closes them) only, so the model learns to answer, not to
reproduce questions, and at inference generation simply continues from :func:`qa_prompt_ids`.

Label convention (shared with ``mammut_video.model.losses.caption_loss``): ``labels`` has the
same shape as ``input_ids``; ``labels[b, i]`` is the token at position ``i`` (so it equals
``input_ids[b, i]``) where position ``i`` is supervised, and -100 elsewhere. The loss shifts
internally: the logits at position ``i - 1`` are scored against ``labels[b, i]``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mammut_video.errors import ConfigError
from mammut_video.text.tokenizer import Tokenizer

QA_PROMPT = "question: {question} answer:"
# Tokens kept free for the answer + EOT when a long question is cut to fit the context.
ANSWER_RESERVE = 16
IGNORE_INDEX = -100

_PREFIX, _SUFFIX = (part.strip() for part in QA_PROMPT.split("{question}"))


def format_question(question: str) -> str:
    """Whitespace-normalised question ending with '?' ("what is he doing" -> "what is he doing?")."""
    text = " ".join(str(question).split())
    if not text:
        raise ConfigError("empty question")
    return text if text.endswith("?") else text + "?"


def qa_prompt_ids(
    tokenizer: Tokenizer,
    questions: Sequence[str],
    context_length: int | None = None,
    answer_reserve: int = ANSWER_RESERVE,
) -> list[list[int]]:
    """Prompt ids per question: SOT + tokens of ``QA_PROMPT`` with the question in, no EOT.

    The template's prefix, question and suffix are encoded separately and concatenated, so the
    question can be cut at token level: a question too long for ``context_length -
    answer_reserve`` loses tokens from its LEFT (its start), keeping the "answer:" suffix last.
    Returns B lists of ints of varying length (at most ``context_length - answer_reserve``).
    """
    if isinstance(questions, str):
        raise TypeError("qa_prompt_ids takes a list of questions, got a single string")
    length = context_length or tokenizer.context_length
    if answer_reserve < 2:
        raise ConfigError(f"answer_reserve must leave room for an answer token and EOT, got {answer_reserve}")
    prefix, suffix = tokenizer.encode(_PREFIX), tokenizer.encode(_SUFFIX)
    budget = length - answer_reserve - 1 - len(prefix) - len(suffix)
    if budget < 1:
        raise ConfigError(
            f"context_length {length} leaves no room for a question after the prompt "
            f"({1 + len(prefix) + len(suffix)} tokens) and the answer reserve ({answer_reserve})"
        )
    prompts = []
    for question in questions:
        question_ids = tokenizer.encode(format_question(question))[-budget:]
        prompts.append([tokenizer.sot_id, *prefix, *question_ids, *suffix])
    return prompts


def build_qa_batch(
    tokenizer: Tokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    context_length: int | None = None,
    answer_reserve: int = ANSWER_RESERVE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forcing batch for QA: loss on the answer tokens and their EOT only.

    Returns ``input_ids`` (B, L) = prompt (exactly :func:`qa_prompt_ids`) + answer + EOT + pad,
    and ``labels`` (B, L) = the answer and EOT ids at their own positions, -100 elsewhere (see
    the module docstring for the shift convention). An answer too long for the context is cut,
    EOT kept last. L = ``context_length`` or the tokenizer's.
    """
    if len(questions) != len(answers):
        raise ConfigError(f"{len(questions)} questions but {len(answers)} answers")
    length = context_length or tokenizer.context_length
    prompts = qa_prompt_ids(tokenizer, questions, length, answer_reserve)
    input_ids = torch.full((len(prompts), length), tokenizer.pad_id, dtype=torch.long)
    labels = torch.full((len(prompts), length), IGNORE_INDEX, dtype=torch.long)
    for row, (prompt, answer) in enumerate(zip(prompts, answers)):
        answer_ids = tokenizer.encode(" ".join(str(answer).split()))
        if not answer_ids:
            raise ConfigError(f"answer {row} (to {questions[row]!r}) is empty")
        target = [*answer_ids, tokenizer.eot_id][: length - len(prompt)]
        target[-1] = tokenizer.eot_id
        start, end = len(prompt), len(prompt) + len(target)
        input_ids[row, :start] = torch.tensor(prompt, dtype=torch.long)
        input_ids[row, start:end] = torch.tensor(target, dtype=torch.long)
        labels[row, start:end] = input_ids[row, start:end]
    return input_ids, labels


def build_caption_batch(
    tokenizer: Tokenizer, captions: Sequence[str], context_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forcing batch for captioning: every real token after SOT is supervised.

    Returns ``input_ids`` (B, L) = ``tokenizer(captions)`` and ``labels`` (B, L) = the same ids
    with -100 on SOT and on the padding after EOT (the EOT itself is supervised).
    """
    if isinstance(captions, str):
        raise TypeError("build_caption_batch takes a list of captions, got a single string")
    input_ids = tokenizer(list(captions), context_length)
    is_eot = input_ids == tokenizer.eot_id
    # Padding is found by position (after the first EOT), not by value: CLIP pads with 0 = "!".
    after_eot = (is_eot.long().cumsum(dim=1) - is_eot.long()) > 0
    labels = input_ids.masked_fill(after_eot, IGNORE_INDEX)
    labels[:, 0] = IGNORE_INDEX
    return input_ids, labels
