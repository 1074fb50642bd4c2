"""Text side: one :class:`Tokenizer` interface (CLIP BPE, SentencePiece) and the QA / caption prompts."""

from mammut_video.text.clip_bpe import ClipBpeTokenizer
from mammut_video.text.prompts import (
    ANSWER_RESERVE,
    QA_PROMPT,
    build_caption_batch,
    build_qa_batch,
    format_question,
    qa_prompt_ids,
)
from mammut_video.text.sentence_piece import SentencePieceTokenizer
from mammut_video.text.tokenizer import DEFAULT_CONTEXT_LENGTH, Tokenizer, build_tokenizer

__all__ = [
    "ANSWER_RESERVE",
    "ClipBpeTokenizer",
    "DEFAULT_CONTEXT_LENGTH",
    "QA_PROMPT",
    "SentencePieceTokenizer",
    "Tokenizer",
    "build_caption_batch",
    "build_qa_batch",
    "build_tokenizer",
    "format_question",
    "qa_prompt_ids",
]
