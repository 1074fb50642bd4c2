"""The tokenizer interface the model, data and eval code share, and the factory that rebuilds one.

A tokenizer maps text to ids and back. Batches follow open_clip's layout: each row is
``SOT + tokens + EOT`` padded with ``pad_id`` to ``context_length``; a text too long is cut
and its last kept position overwritten with EOT, so every row ends its text with EOT.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import torch

from mammut_video.errors import ConfigError

DEFAULT_CONTEXT_LENGTH = 77


class Tokenizer(ABC):
    """Text <-> token ids, with start (SOT), end (EOT) and padding ids.

    Subclasses set ``vocab_size``, ``context_length``, ``pad_id``, ``sot_id``, ``eot_id`` and
    implement :meth:`encode`, :meth:`_decode_ids` and :meth:`save`.
    """

    vocab_size: int
    context_length: int
    pad_id: int
    sot_id: int
    eot_id: int

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without SOT / EOT."""

    @abstractmethod
    def _decode_ids(self, ids: list[int]) -> str:
        """Text of ``ids`` (no SOT, EOT or trailing padding left in them)."""

    @abstractmethod
    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write the files this tokenizer needs into ``directory`` (a checkpoint dir).

        Returns the JSON-able spec that :func:`build_tokenizer` turns back into it.
        """

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """Tokenize a text or a batch of texts.

        Returns a LongTensor (B, L), L = ``context_length`` (default: the tokenizer's): SOT +
        tokens + EOT, padded with ``pad_id``; over-long rows are cut to L with EOT kept last.
        """
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        if length < 2:
            raise ConfigError(f"context_length must be at least 2 (SOT + EOT), got {length}")
        out = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_id
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of one id sequence: drops SOT, stops at the first EOT, drops trailing padding."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ConfigError(f"decode takes one sequence (1-D), got shape {tuple(ids.shape)}; use batch_decode")
            ids = ids.tolist()
        kept: list[int] = []
        for token in ids:
            token = int(token)
            if token == self.eot_id:
                break
            if token != self.sot_id:
                kept.append(token)
        # Padding is stripped from the end only: CLIP's pad id 0 is also the real token "!".
        while kept and kept[-1] == self.pad_id:
            kept.pop()
        return self._decode_ids(kept)

    def batch_decode(self, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Texts of a batch of id sequences, (B, L) tensor or list of lists."""
        if isinstance(ids, torch.Tensor) and ids.dim() != 2:
            raise ConfigError(f"batch_decode takes a (B, L) batch, got shape {tuple(ids.shape)}")
        return [self.decode(row) for row in ids]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, context_length={self.context_length}, "
            f"pad_id={self.pad_id}, sot_id={self.sot_id}, eot_id={self.eot_id})"
        )


def build_tokenizer(spec: dict[str, Any], directory: str | Path | None = None) -> Tokenizer:
    """Rebuild a tokenizer from the spec its :meth:`Tokenizer.save` returned.

    ``spec`` is e.g. ``{"type": "clip_bpe", "context_length": 77}`` or
    ``{"type": "sentencepiece", "model_file": "tokenizer.model", "context_length": 77}``;
    relative files are resolved against ``directory`` (the checkpoint dir).
    """
    kind = spec.get("type")
    context_length = int(spec.get("context_length", DEFAULT_CONTEXT_LENGTH))
    if kind == "clip_bpe":
        from mammut_video.text.clip_bpe import ClipBpeTokenizer

        return ClipBpeTokenizer(context_length=context_length)
    if kind == "sentencepiece":
        from mammut_video.text.sentence_piece import SentencePieceTokenizer

        if "model_file" not in spec:
            raise ConfigError(f"sentencepiece tokenizer spec has no 'model_file': {spec}")
        model_file = Path(spec["model_file"])
        if not model_file.is_absolute() and directory is not None:
            model_file = Path(directory) / model_file
        return SentencePieceTokenizer(model_file, context_length=context_length)
    raise ConfigError(f"unknown tokenizer type {kind!r} in spec {spec}; expected 'clip_bpe' or 'sentencepiece'")
