"""Quieting native libraries that write straight to file descriptor 2 (decord's C++ logger, Java tools)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration.

    decord's C++ logger writes "video_reader.cc:83: ERROR opening ..." straight to descriptor 2, and
    pycocoevalcap's Java PTB tokenizer "PTBTokenizer tokenized 2268 tokens at ...", in the middle of
    a progress bar; the errors raised after them carry the cause.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
