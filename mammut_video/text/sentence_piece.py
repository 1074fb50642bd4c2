"""SentencePiece tokenizer: load a ``.model`` file, or train one from a caption / QA corpus.

Models trained here reserve pad = 0, unk = 1, bos = 2, eos = 3 and use bos / eos as SOT / EOT.
A model trained elsewhere must define pad, bos and eos ids (``--pad_id`` etc. at training).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Iterable

from mammut_video.errors import ConfigError, MissingFileError
from mammut_video.text.tokenizer import DEFAULT_CONTEXT_LENGTH, Tokenizer

MODEL_FILE = "tokenizer.model"


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model behind the :class:`Tokenizer` interface."""

    def __init__(self, model_file: str | Path, context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        import sentencepiece as spm

        model_file = Path(model_file)
        if not model_file.is_file():
            raise MissingFileError(f"SentencePiece model file not found: {model_file}")
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_file.read_bytes())
        except RuntimeError as exc:
            raise ConfigError(f"{model_file} is not a valid SentencePiece model: {exc}") from exc
        self.model_file = model_file
        self.vocab_size = int(self._sp.get_piece_size())
        self.context_length = int(context_length)
        self.pad_id = int(self._sp.pad_id())
        self.sot_id = int(self._sp.bos_id())
        self.eot_id = int(self._sp.eos_id())
        missing = [name for name, i in (("pad", self.pad_id), ("bos", self.sot_id), ("eos", self.eot_id)) if i < 0]
        if missing:
            raise ConfigError(
                f"SentencePiece model {model_file} has no {'/'.join(missing)} id; train it with pad, bos and eos "
                "reserved (SentencePieceTokenizer.train does this)"
            )

    @classmethod
    def train(
        cls,
        corpus: Iterable[str] | str | os.PathLike[str],
        out_prefix: str | Path,
        vocab_size: int = 8000,
        model_type: str = "unigram",
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        character_coverage: float = 1.0,
        **trainer_options: Any,
    ) -> "SentencePieceTokenizer":
        """Train a model on ``corpus`` and write ``{out_prefix}.model``; returns it loaded.

        ``corpus`` is an iterable of sentences or the path of a text file, one sentence a line.
        Training is single-threaded over the whole corpus in order, so the same corpus and
        options give the same model. Extra keyword options go to ``SentencePieceTrainer.train``
        (e.g. ``hard_vocab_limit=False`` when a small corpus cannot fill ``vocab_size``).
        """
        import sentencepiece as spm

        options: dict[str, Any] = dict(
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            minloglevel=2,
        )
        options.update(trainer_options)
        if isinstance(corpus, (str, os.PathLike)):
            path = Path(corpus)
            if not path.is_file():
                raise MissingFileError(f"SentencePiece training corpus not found: {path}")
            options["input"] = str(path)
            source = str(path)
        else:
            sentences = [" ".join(str(s).split()) for s in corpus]
            sentences = [s for s in sentences if s]
            if not sentences:
                raise ConfigError("SentencePiece training corpus is empty")
            options["sentence_iterator"] = iter(sentences)
            source = f"{len(sentences)} sentences"
        proto = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(model_writer=proto, **options)
        except RuntimeError as exc:
            raise ConfigError(f"SentencePiece training on {source} failed: {exc}") from exc
        model_file = Path(f"{out_prefix}.model")
        model_file.parent.mkdir(parents=True, exist_ok=True)
        model_file.write_bytes(proto.getvalue())
        return cls(model_file, context_length=context_length)

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def _decode_ids(self, ids: list[int]) -> str:
        for token in ids:
            if not 0 <= token < self.vocab_size:
                raise ConfigError(f"token id {token} is outside the vocabulary of {self.model_file} (0..{self.vocab_size - 1})")
        return self._sp.decode(ids)  # control ids (pad, bos, eos) decode to nothing

    def save(self, directory: str | Path) -> dict[str, Any]:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_bytes(self._sp.serialized_model_proto())
        return {"type": "sentencepiece", "model_file": MODEL_FILE, "context_length": self.context_length}
