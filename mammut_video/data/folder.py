"""A folder of videos (recursive), for embedding, search and captioning."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import overload

from mammut_video.data.files import DatasetNotFoundError
from mammut_video.data.layout import VIDEO_EXTENSIONS
from mammut_video.data.records import VideoRecord


class VideoFolder(Sequence[VideoRecord]):
    """Every video file under ``root``, recursively, in sorted relative-path order.

    Extensions match case-insensitively (default: mp4, avi, mkv, webm, mov, m4v); hidden
    files and folders are skipped; symlinked folders are followed once. Items are
    :class:`VideoRecord` whose ``video_id`` is the path relative to ``root`` (POSIX form).
    """

    def __init__(self, root: str | Path, extensions: Sequence[str] = VIDEO_EXTENSIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"video folder {self.root} does not exist or is not a folder")
        exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
        found: list[Path] = []
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:  # a symlink loop or a folder reached twice
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found.extend(Path(dirpath) / f for f in filenames
                         if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts)
        if not found:
            raise DatasetNotFoundError(f"no video files ({', '.join(sorted(exts))}) under {self.root}")
        rel = sorted((p.relative_to(self.root).as_posix(), p) for p in found)
        self.records = [VideoRecord(video=p, video_id=r) for r, p in rel]

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, i: int) -> VideoRecord: ...
    @overload
    def __getitem__(self, i: slice) -> list[VideoRecord]: ...

    def __getitem__(self, i):
        return self.records[i]

    @property
    def paths(self) -> list[Path]:
        return [r.video for r in self.records]
