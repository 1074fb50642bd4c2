"""CLIP byte-level BPE through open_clip's ``SimpleTokenizer`` (vocab file ships with open_clip).

Ids match ``open_clip.tokenize`` exactly: vocab 49408, SOT 49406, EOT 49407, pad 0. Like the
reference, text is cleaned (ftfy, html unescape, whitespace) and lower-cased before encoding.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from mammut_video.errors import ConfigError
from mammut_video.text.tokenizer import DEFAULT_CONTEXT_LENGTH, Tokenizer

# "a dog , runs ?" -> "a dog, runs?": CLIP's pre-tokenizer always splits punctuation from
# words, so re-attaching it does not change the ids the text encodes to.
_SPACE_BEFORE_PUNCT = re.compile(r"(?<=\w) ([,.?!;:])(?=\s|$)")


@lru_cache(maxsize=1)
def _simple_tokenizer() -> Any:
    from open_clip.tokenizer import SimpleTokenizer

    import mammut_video  # noqa: F401  (torchvision guard before open_clip)

    return SimpleTokenizer()


class ClipBpeTokenizer(Tokenizer):
    """open_clip's CLIP BPE tokenizer behind the :class:`Tokenizer` interface."""

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        self._bpe = _simple_tokenizer()
        self.vocab_size = int(self._bpe.vocab_size)
        self.context_length = int(context_length)
        self.pad_id = 0
        self.sot_id = int(self._bpe.sot_token_id)
        self.eot_id = int(self._bpe.eot_token_id)

    def encode(self, text: str) -> list[int]:
        return list(self._bpe.encode(text))

    def _decode_ids(self, ids: list[int]) -> str:
        for token in ids:
            if not 0 <= token < self.vocab_size:
                raise ConfigError(f"token id {token} is outside the CLIP vocabulary (0..{self.vocab_size - 1})")
        # open_clip turns every end-of-word marker into a space, leaving "a dog runs ".
        text = " ".join(self._bpe.decode(ids).split())
        return _SPACE_BEFORE_PUNCT.sub(r"\1", text)

    def save(self, directory: str | Path) -> dict[str, Any]:
        # Nothing to write: the BPE merges ship inside the open_clip package.
        return {"type": "clip_bpe", "context_length": self.context_length}
