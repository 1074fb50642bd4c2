"""Finding annotations and videos under a ``--data-root`` laid out however the download left it.

The data root is scanned a few levels deep once; annotation files are matched by name (the
first name in the caller's priority list wins, then the shallowest), video folders by how
many files they hold whose name the dataset expects. Errors list the names and folders tried.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mammut_video.data.files import DatasetNotFoundError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
MAX_DEPTH = 4


def is_video_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


@dataclass
class ScannedDir:
    path: Path
    depth: int
    files: list[str]


def scan(root: Path, max_depth: int = MAX_DEPTH) -> list[ScannedDir]:
    """Every folder under ``root`` down to ``max_depth`` with its file names (symlinks followed once)."""
    out: list[ScannedDir] = []
    seen: set[str] = set()
    stack = [(root, 0)]
    while stack:
        path, depth = stack.pop()
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        files, subdirs = [], []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        if entry.is_dir():
                            if not entry.name.startswith("."):
                                subdirs.append(entry.name)
                        elif entry.is_file():
                            files.append(entry.name)
                    except OSError:
                        continue
        except OSError:
            continue
        out.append(ScannedDir(path, depth, sorted(files)))
        if depth < max_depth:
            stack.extend((path / d, depth + 1) for d in sorted(subdirs, reverse=True))
    return out


def _listing(dirs: Sequence[ScannedDir], limit: int = 25) -> str:
    shown = "\n  ".join(str(d.path) for d in dirs[:limit])
    more = f"\n  ... and {len(dirs) - limit} more folders" if len(dirs) > limit else ""
    return f"  {shown}{more}"


def in_other_dataset(folder: Path, root: Path, avoid: str | None) -> bool:
    """Whether ``folder``'s path below ``root`` names ``avoid`` (another dataset, for a root holding several)."""
    return avoid is not None and avoid in str(folder.relative_to(root)).lower()


def find_annotation(root: Path, names: Sequence[str], what: str,
                    scanned: list[ScannedDir] | None = None, avoid: str | None = None) -> Path:
    """The annotation file under ``root`` whose name comes first in ``names`` (case-insensitive).

    Files whose path below ``root`` contains ``avoid`` (another dataset's name, for a root
    holding several datasets) are taken only when nothing else matches.
    """
    if not root.is_dir():
        raise DatasetNotFoundError(f"{what}: data root {root} is not a folder")
    scanned = scan(root) if scanned is None else scanned
    rank = {n.lower(): i for i, n in enumerate(names)}
    best: tuple[bool, int, int, str] | None = None
    for d in scanned:
        other = in_other_dataset(d.path, root, avoid)
        for name in d.files:
            r = rank.get(name.lower())
            if r is not None:
                key = (other, r, d.depth, str(d.path / name))
                best = key if best is None or key < best else best
    if best is None:
        raise DatasetNotFoundError(
            f"{what}: found none of [{', '.join(names)}] under {root} (searched {len(scanned)} "
            f"folders, {MAX_DEPTH} levels deep):\n{_listing(scanned)}\n"
            f"Pass the file with --annotations, or see datasets/*/README.md for the expected layouts.")
    return Path(best[3])


def _matching_videos(scanned: Sequence[ScannedDir], wanted: Callable[[str], bool]) -> dict[Path, set[str]]:
    """Folder -> the stems of its video files that ``wanted`` names, for folders holding any."""
    hits = {}
    for d in scanned:
        stems = {os.path.splitext(f)[0] for f in d.files if is_video_file(f)}
        if named := {s for s in stems if wanted(s)}:
            hits[d.path] = named
    return hits


def find_video_dir(root: Path, wanted: Callable[[str], bool], what: str,
                   scanned: list[ScannedDir] | None = None, near: Path | None = None) -> Path:
    """The folder under ``root`` holding the videos this dataset names.

    ``wanted(stem)`` says whether a file stem is one of the dataset's videos. When matching
    videos lie in several folders (MSR-VTT's TrainValVideo/ and TestVideo/) their common
    parent is returned; loaders then index it recursively. ``near``: the annotation file's
    dataset folder (inside ``root``), searched first, as deep again; the search over ``root``
    wins only when it finds more of the named videos (a root holding several datasets or copies
    can hold clips with the same names, or the annotation's own videos too deep to be seen).
    """
    if not root.is_dir():
        raise DatasetNotFoundError(f"{what}: data root {root} is not a folder")
    scanned = scan(root) if scanned is None else scanned
    hits = _matching_videos(scanned, wanted)
    if near is not None and near.is_dir() and root.resolve() in near.resolve().parents:  # strictly inside root
        near_hits = _matching_videos(scan(near), wanted)
        if near_hits and len(set().union(*near_hits.values())) >= len(set().union(*hits.values())):
            hits = near_hits
    if not hits:
        raise DatasetNotFoundError(
            f"{what}: no video files ({', '.join(VIDEO_EXTENSIONS)}) named as this dataset expects "
            f"under {root} (searched {len(scanned)} folders, {MAX_DEPTH} levels deep):\n"
            f"{_listing(scanned)}\nPass the folder with --videos.")
    folders = list(hits)
    return folders[0] if len(folders) == 1 else Path(os.path.commonpath(folders))


class VideoIndex:
    """File stem -> path for every video file under a folder (recursive)."""

    def __init__(self, root: Path, max_depth: int = MAX_DEPTH + 2):
        if not root.is_dir():
            raise DatasetNotFoundError(f"video folder {root} does not exist or is not a folder")
        self.root = root
        self._paths: dict[str, list[Path]] = {}
        for d in scan(root, max_depth):
            for f in d.files:
                if is_video_file(f):
                    self._paths.setdefault(os.path.splitext(f)[0], []).append(d.path / f)

    def __contains__(self, stem: str) -> bool:
        return stem in self._paths

    def __len__(self) -> int:
        return len(self._paths)

    def stems(self) -> Iterable[str]:
        return self._paths.keys()

    def resolve(self, name: str, default_ext: str) -> Path:
        """Path of video ``name`` (a stem, or a file name/relative path with extension).

        An existing file is preferred: with ``default_ext`` first, then any video extension,
        shallowest first. A video that is nowhere yields ``root / (stem + default_ext)`` so
        the caller can list it as missing.
        """
        direct = self.root / name
        if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS and direct.is_file():
            return direct
        stem = os.path.splitext(os.path.basename(name))[0] if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS \
            else os.path.basename(name)
        candidates = self._paths.get(stem)
        if not candidates:
            return self.root / f"{stem}{default_ext}"
        return min(candidates, key=lambda p: (p.suffix.lower() != default_ext, len(p.parts), str(p)))


def custom_video_path(video_dir: Path, ref: str) -> Path:
    """The file a custom annotation's ``video`` names: ``video_dir / ref`` (an absolute ``ref`` as it
    is); a name without extension that is not a file takes the first video extension that is."""
    path = video_dir / ref
    if not path.suffix and not path.is_file():
        for ext in VIDEO_EXTENSIONS:
            if path.with_name(path.name + ext).is_file():
                return path.with_name(path.name + ext)
    return path
