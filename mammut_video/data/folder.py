"""A folder of videos (recursive), for embedding, search and captioning.

Video files are recognised by extension; with ``probe_unknown`` a file whose extension is
neither a video one nor a common non-video one (images, text, audio, archives, weights) is
opened with PyAV and kept when it holds a video stream (:func:`holds_video`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import overload

from mammut_video.data.files import DatasetNotFoundError
from mammut_video.data.layout import VIDEO_EXTENSIONS
from mammut_video.data.records import VideoRecord

log = logging.getLogger(__name__)

# extensions never probed: they are not videos (an image opens in FFmpeg as a one-frame video)
NON_VIDEO_EXTENSIONS = frozenset(
    ".jpg .jpeg .png .gif .bmp .tif .tiff .webp .heic .svg .ico "
    ".txt .md .rst .csv .tsv .json .jsonl .yaml .yml .xml .html .htm .pdf .log .srt .vtt .ass "
    ".mp3 .wav .flac .aac .ogg .opus .m4a .wma "
    ".zip .tar .gz .tgz .bz2 .xz .7z .rar "
    ".py .sh .ipynb .c .h .cpp .js .css "
    ".pt .pth .bin .safetensors .ckpt .npy .npz .pkl .parquet .db .sqlite".split())

# FFmpeg demuxers that read a still image as a one-frame video stream
_IMAGE_FORMATS = ("image2", "_pipe", "gif", "webp", "apng")
# header-only probing, as in mammut_video.video.container (no frame is decoded)
_HEADER_ONLY = {"probesize": "5000000", "analyzeduration": "0"}


def holds_video(path: str | os.PathLike) -> bool:
    """Whether FFmpeg (PyAV) opens ``path`` as a video: a video stream that is not a still image
    (an image file, an audio file's cover art). Reads the container header only; never raises
    for a file that is not a video."""
    import av

    try:
        with av.open(os.fspath(path), metadata_errors="ignore", options=_HEADER_ONLY) as container:
            names = container.format.name.split(",")
            if any(n == f or n.endswith(f) for n in names for f in _IMAGE_FORMATS):
                return False
            return any(not (s.disposition & av.stream.Disposition.attached_pic) for s in container.streams.video)
    except Exception:  # noqa: BLE001 - whatever FFmpeg fails on, the file is not a video we can read
        return False


class VideoFolder(Sequence[VideoRecord]):
    """Every video file under ``root``, recursively, in sorted relative-path order.

    Extensions match case-insensitively (default: mp4, avi, mkv, webm, mov, m4v); hidden
    files and folders are skipped; symlinked folders are followed once. Items are
    :class:`VideoRecord` whose ``video_id`` is the path relative to ``root`` (POSIX form).

    ``probe_unknown``: also keep files with another extension (or none) that :func:`holds_video`,
    except those in :data:`NON_VIDEO_EXTENSIONS`. ``exclude``: folders not to walk (e.g. an output
    folder inside ``root``). ``skipped`` lists the files that were not taken as videos.
    """

    def __init__(self, root: str | Path, extensions: Sequence[str] = VIDEO_EXTENSIONS, *,
                 probe_unknown: bool = False, exclude: Sequence[str | Path] = ()):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"video folder {self.root} does not exist or is not a folder")
        exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
        found, self.skipped = self._walk(exts, probe_unknown, {os.path.realpath(p) for p in exclude})
        if not found:
            others = f" ({len(self.skipped)} other files, e.g. {self.skipped[0]})" if self.skipped else \
                " (the folder holds no files)"
            raise DatasetNotFoundError(f"no video files ({', '.join(sorted(exts))}"
                                       f"{' or others FFmpeg reads' if probe_unknown else ''}) under "
                                       f"{self.root}{others}")
        rel = sorted((p.relative_to(self.root).as_posix(), p) for p in found)
        self.records = [VideoRecord(video=p, video_id=r) for r, p in rel]

    def _walk(self, exts: set[str], probe_unknown: bool, exclude: set[str]) -> tuple[list[Path], list[Path]]:
        found: list[Path] = []
        skipped: list[Path] = []
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen or real in exclude:  # a symlink loop, a folder reached twice, an excluded one
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(f for f in filenames if not f.startswith(".")):
                path = Path(dirpath) / name
                ext = os.path.splitext(name)[1].lower()
                if ext in exts:
                    found.append(path)
                elif probe_unknown and ext not in NON_VIDEO_EXTENSIONS and path.is_file() and holds_video(path):
                    log.debug("%s: no video extension, but FFmpeg reads it as a video", path)
                    found.append(path)
                else:
                    skipped.append(path)
        return found, skipped

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
