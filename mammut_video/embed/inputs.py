"""What ``embed`` reads: the inputs of a folder or a list file, and the windows of each video.

An input is a video file, or a segment of one when a list gives ``start`` / ``end``. Its *key*
holds its name, segment, size and modification time, so an input whose file changed is a new
input (embedded again) and the rows of the old one are dropped when the run ends.

Lists: a file whose first line names a ``path`` column (comma-separated, or tab-separated in a
``.tsv``) is read as CSV with optional ``start`` / ``end`` columns in seconds; any other file
holds one path per line (blank lines and lines starting with ``#`` are skipped). Lists are UTF-8,
a leading byte-order mark skipped. Relative paths are read from the list's folder; the index
keeps them as written.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mammut_video.data.files import ENCODING
from mammut_video.errors import ConfigError, MissingFileError

log = logging.getLogger(__name__)

# seconds: window bounds are rounded to this, and a last window ending this close to the end is enough
_TIME_DIGITS = 6
_EPS = 1e-6


class InputListError(ConfigError):
    """A list of inputs that cannot be read as given (names the file and the line)."""


@dataclass(frozen=True)
class VideoInput:
    """One input: ``path`` (to read), ``name`` (as stored in the index: relative to the input folder,
    or as the list writes it), ``size`` and ``mtime`` of the file (-1 and 0.0 when it is missing),
    and the segment ``start`` / ``end`` in seconds a list may give (None: the whole video).

    It is also a unit of :func:`~mammut_video.runtime.loop.run_sharded` (one key per input).
    """

    path: Path
    name: str
    size: int
    mtime: float
    start: float | None = None
    end: float | None = None

    @property
    def key(self) -> str:
        """Identity of the input and of the file's content: name, segment, size and mtime."""
        return input_key(self.name, self.segment, self.size, self.mtime)

    @property
    def segment(self) -> list[float | None] | None:
        """``[start, end]`` when a list gave either, else None."""
        return None if self.start is None and self.end is None else [self.start, self.end]

    @property
    def keys(self) -> list[str]:
        return [self.key]

    def restrict(self, keys: list[str]) -> VideoInput:
        return self


def input_key(name: str, segment: list | None, size: int, mtime: float) -> str:
    """The key of :class:`VideoInput`, also computed from a stored row's fields."""
    return json.dumps([name, segment, size, mtime])


def row_key(row: dict) -> str:
    """The key of the input a stored row (or failure) belongs to."""
    return input_key(row["path"], row.get("segment"), row["size"], row["mtime"])


@dataclass
class Inputs:
    """The inputs of a run: ``kind`` "folder" or "list", ``root`` (the folder relative names are read
    from), the inputs in order, and ``ignored`` files of the folder that are not videos."""

    kind: str
    root: Path
    items: list[VideoInput]
    ignored: int = 0

    def resolve(self, name: str) -> Path:
        """Where the input stored as ``name`` is read from."""
        return resolve_name(self.root, name)


def resolve_name(root: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else root / path


def _stat(path: Path) -> tuple[int, float]:
    try:
        st = path.stat()
    except OSError:
        return -1, 0.0
    return st.st_size, st.st_mtime


def _make_input(path: Path, name: str, start: float | None = None, end: float | None = None) -> VideoInput:
    size, mtime = _stat(path)
    return VideoInput(path=path, name=name, size=size, mtime=mtime, start=start, end=end)


def list_inputs(source: str | Path, exclude: Sequence[Path] = ()) -> Inputs:
    """The inputs named by ``source``, a folder or a list file (see the module docstring).

    ``exclude``: folders not to walk (the output folder when it lies inside ``source``).
    Raises :class:`MissingFileError` when ``source`` is not there,
    :class:`~mammut_video.data.DatasetNotFoundError` for a folder without videos, and
    :class:`InputListError` for a list that is empty, malformed, or names no existing file.
    """
    from mammut_video.data.folder import VideoFolder

    source = Path(source).expanduser()
    if not source.exists():
        raise MissingFileError(f"input {source} not found (expected a folder of videos or a list of paths)")
    if source.is_dir():
        folder = VideoFolder(source.resolve(), probe_unknown=True, exclude=exclude)
        items = [_make_input(r.video, r.video_id) for r in folder.records]
        return Inputs("folder", folder.root, items, ignored=len(folder.skipped))
    return _list_file(source)


def _list_file(path: Path) -> Inputs:
    root = path.resolve().parent
    entries = list(_read_entries(path))
    if not entries:
        raise InputListError(f"{path}: lists no video (one path per line, or a CSV with a 'path' column)")
    items: list[VideoInput] = []
    seen: dict[tuple, int] = {}
    for line, name, start, end in entries:
        ident = (name, start, end)
        if ident in seen:
            log.warning("%s: line %d repeats line %d (%s); embedded once", path, line, seen[ident], name)
            continue
        seen[ident] = line
        items.append(_make_input(resolve_name(root, name), name, start, end))
    missing = [i for i in items if i.size < 0]
    if len(missing) == len(items):
        raise InputListError(f"{path}: none of the {len(items)} files it lists exists (first: {missing[0].path}; "
                             "relative paths are read from the list's folder)")
    if missing:
        log.warning("%s: %d of the %d files it lists are missing (first: %s); they go to errors.jsonl",
                    path, len(missing), len(items), missing[0].path)
    return Inputs("list", root, items)


def _read_entries(path: Path) -> Iterator[tuple[int, str, float | None, float | None]]:
    """``(line number, path as written, start, end)`` of every entry of a list file."""
    try:
        text = path.read_text(encoding=ENCODING)
    except (OSError, UnicodeDecodeError) as err:
        raise InputListError(f"{path}: cannot read the list of inputs ({err})") from None
    lines = text.splitlines()
    first = next((i for i, raw in enumerate(lines) if raw.strip() and not raw.lstrip().startswith("#")), None)
    if first is None:
        return
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    header = [c.strip().lower() for c in next(csv.reader([lines[first]], delimiter=delimiter))]
    if "path" in header:
        yield from _csv_entries(path, lines, first, header, delimiter)
    elif path.suffix.lower() in (".csv", ".tsv"):
        raise InputListError(f"{path}: line {first + 1}: no 'path' column (columns: {', '.join(header)}); a CSV list "
                             "needs a header naming a 'path' column, with optional 'start' and 'end'")
    else:
        for number, raw in enumerate(lines, start=1):
            if raw.strip() and not raw.lstrip().startswith("#"):
                yield number, raw.strip(), None, None


def _csv_entries(path: Path, lines: list[str], first: int, header: list[str],
                 delimiter: str) -> Iterator[tuple[int, str, float | None, float | None]]:
    col = {name: header.index(name) for name in ("path", "start", "end") if name in header}
    reader = csv.reader(lines[first + 1:], delimiter=delimiter)
    for offset, cells in enumerate(reader):
        number = first + 2 + offset
        if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        cell = {name: (cells[i].strip() if i < len(cells) else "") for name, i in col.items()}
        if not cell["path"]:
            raise InputListError(f"{path}: line {number}: empty 'path'")
        start = _seconds(path, number, "start", cell.get("start", ""))
        end = _seconds(path, number, "end", cell.get("end", ""))
        if start is not None and end is not None and end <= start:
            raise InputListError(f"{path}: line {number}: end {end} s is not after start {start} s")
        yield number, cell["path"], start, end


def _seconds(path: Path, number: int, name: str, text: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (name == "end" and value == 0):
        raise InputListError(f"{path}: line {number}: {name} {text!r} is not a number of seconds"
                             f"{' > 0' if name == 'end' else ' >= 0'}")
    return value


@dataclass(frozen=True)
class Window:
    """Window ``index`` of ``count`` of an input: ``[start, end)`` seconds from the video's first frame.

    ``start`` / ``end`` are None for a whole video (read as ``read_clip`` reads a file)."""

    index: int
    count: int
    start: float | None
    end: float | None


@dataclass(frozen=True)
class WindowPlan:
    """How an input is cut: one clip per input (``clip_seconds`` None) or windows of ``clip_seconds``
    every ``stride_seconds``."""

    clip_seconds: float | None = None
    stride_seconds: float | None = None

    def windows(self, duration: float, start: float | None = None, end: float | None = None, *,
                frame_seconds: float = 0.0) -> list[Window]:
        """The windows of a video of ``duration`` seconds, within the segment ``[start, end)`` if given.

        Windows start at the segment start and every ``stride_seconds`` after it, each
        ``clip_seconds`` long; when the last one misses at least one whole frame of the end
        (``frame_seconds``, one frame at the video's rate; 0 when unknown), one more window ends
        exactly at the end (so every window has the same length and every frame is covered). Less
        than a frame left over is no new picture: a window shifted by it would repeat the last one
        (14.014 s at 29.97 fps: 9.0-14.0 s, not also 9.014-14.014 s). A video shorter than one window
        gives one window over all of it. Raises :class:`ValueError` when the segment starts at or
        after the end of the video.
        """
        lo = start or 0.0
        hi = duration if end is None else min(end, duration)
        if hi - lo <= _EPS:
            raise ValueError(f"segment start {lo:.3f} s is at or past the end of the video ({duration:.3f} s)")
        if self.clip_seconds is None:
            return [Window(0, 1, start, end)]
        clip, stride = self.clip_seconds, self.stride_seconds or self.clip_seconds
        if hi - lo <= clip + _EPS:
            return [Window(0, 1, lo, hi)]
        count = math.floor((hi - lo - clip) / stride + _EPS) + 1
        starts = [lo + k * stride for k in range(count)]
        if _misses_a_frame(hi - (starts[-1] + clip), frame_seconds):
            starts.append(hi - clip)
        return [Window(i, len(starts), round(s, _TIME_DIGITS), round(s + clip, _TIME_DIGITS))
                for i, s in enumerate(starts)]


def _misses_a_frame(uncovered: float, frame_seconds: float) -> bool:
    """Whether ``uncovered`` seconds left after the last window hold a frame of their own: at least
    one frame period (any time at all when the period is unknown, 0)."""
    return uncovered > _EPS and uncovered >= frame_seconds - _EPS
