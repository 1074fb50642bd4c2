"""MSVD naming: ``youtube_mapping.txt`` (``<clip name> vid<N>``) and the vid-number splits."""

from __future__ import annotations

import re
from pathlib import Path

from mammut_video.data.files import AnnotationError, read_text

MAPPING_FILE = "youtube_mapping.txt"
# captioning split by vid number (Venugopalan et al. 2015); MSVD-QA uses its own json files
CAPTION_SPLITS = {"train": range(1, 1201), "val": range(1201, 1301), "test": range(1301, 1971)}
_VID = re.compile(r"vid(\d+)")


def read_youtube_mapping(path: Path) -> dict[int, str]:
    """``youtube_mapping.txt`` -> {vid number: YouTube clip name} (``-4wsuPCjDBc_5_15 vid1`` -> {1: ...})."""
    mapping: dict[int, str] = {}
    lines = read_text(path).split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        m = _VID.fullmatch(parts[-1]) if len(parts) == 2 else None
        if m is None:
            raise AnnotationError(path, f"expected '<clip name> vid<N>', got {line.strip()!r}",
                                  record=f"line {lineno}")
        vid = int(m.group(1))
        if vid in mapping:
            raise AnnotationError(path, f"vid{vid} mapped twice ({mapping[vid]!r} and {parts[0]!r})",
                                  record=f"line {lineno}")
        mapping[vid] = parts[0]
    if not mapping:
        raise AnnotationError(path, "empty mapping file")
    return mapping


def mapping_from_names(names: list[str]) -> dict[int, str]:
    """The mapping the MSVD release uses when no file is at hand: vid numbers follow byte-sorted clip names."""
    return {i: name for i, name in enumerate(sorted(set(names), key=lambda s: s.encode()), 1)}


def vid_number(ref: str) -> int | None:
    """``"vid12"`` -> 12, anything else -> None."""
    m = _VID.fullmatch(ref)
    return int(m.group(1)) if m else None
