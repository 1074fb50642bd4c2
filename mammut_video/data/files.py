"""Reading annotation files with errors that name the file and the record.

Every malformed input ends in :class:`AnnotationError` whose message starts with the file
path and, where one is at fault, the record: ``line N`` in a JSON-lines, CSV or TSV file (the
line in the file, header and blank lines counted), its 0-based position in a JSON array
(:func:`record_labels`). Files are read as UTF-8; a leading byte-order mark (Excel's "CSV
UTF-8" writes one) is skipped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mammut_video.errors import ConfigError, MammutVideoError, check_segment

# UTF-8, with the byte-order mark that Excel's "CSV UTF-8" and some editors write skipped
ENCODING = "utf-8-sig"


class AnnotationError(MammutVideoError, ValueError):
    """An annotation file that cannot be used as it is. ``.path`` and ``.record`` say where."""

    def __init__(self, path: str | Path, message: str, record: int | str | None = None):
        self.path = Path(path)
        self.record = record
        where = f"{path}" if record is None else f"{path}: record {record}"
        super().__init__(f"{where}: {message}")


class DatasetNotFoundError(MammutVideoError, FileNotFoundError):
    """Annotations or videos could not be found; the message lists every place looked at."""


def read_text(path: Path) -> str:
    """The text of ``path`` (UTF-8, a leading byte-order mark dropped); reading errors as AnnotationError."""
    with reading_errors(path):
        return path.read_text(encoding=ENCODING)


def read_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(path, f"malformed JSON at line {err.lineno} column {err.colno}: "
                                    f"{err.msg}") from None


class LineRecords(list[Any]):
    """The records of a file read one per line (JSON lines, CSV, TSV); ``lines[i]`` is the line
    (1-based) record ``i`` was read from (for a CSV row spanning lines, its last)."""

    def __init__(self, records: list[Any], lines: list[int]):
        super().__init__(records)
        self.lines = lines


def record_labels(records: list[Any]) -> list[int | str]:
    """How errors name each record: ``"line N"`` for records read one per line, else the 0-based position."""
    if isinstance(records, LineRecords):
        return [f"line {n}" for n in records.lines]
    return list(range(len(records)))


def read_jsonl(path: Path) -> LineRecords:
    """Records of a JSON-lines file; blank lines are skipped, errors name the line (``record line N``)."""
    out, lines = [], []
    with path.open(encoding=ENCODING) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise AnnotationError(path, f"malformed JSON: {err.msg} (column {err.colno})",
                                      record=f"line {lineno}") from None
            lines.append(lineno)
    return LineRecords(out, lines)


@contextmanager
def reading_errors(path: Path) -> Iterator[None]:
    """Turn the errors of reading ``path`` as text (encoding, CSV syntax, I/O) into AnnotationError."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise AnnotationError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise AnnotationError(path, f"malformed CSV: {err}") from None
    except OSError as err:
        raise AnnotationError(path, f"cannot be read: {err.strerror or err}") from None


def read_csv(path: Path) -> LineRecords:
    """Rows of a CSV file with a header line, as dicts, each with its line; empty cells are dropped.
    A ``.tsv`` is split on tabs."""
    with reading_errors(path):
        return _read_csv(path)


def _read_csv(path: Path) -> LineRecords:
    with path.open(encoding=ENCODING, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        if not reader.fieldnames:
            raise AnnotationError(path, "empty CSV file (expected a header line)")
        rows, lines = [], []
        for row in reader:
            if None in row:  # more cells than header columns
                raise AnnotationError(path, f"row has {len(reader.fieldnames) + len(row[None])} cells "
                                            f"but the header has {len(reader.fieldnames)}",
                                      record=f"line {reader.line_num}")
            rows.append({k.strip(): v for k, v in row.items() if v not in (None, "")})
            lines.append(reader.line_num)
    return LineRecords(rows, lines)


def read_records(path: Path) -> list[Any]:
    """JSON array, JSONL, CSV or TSV by extension (``.json`` holding one object per line is read as JSONL)."""
    suffix = path.suffix.lower()
    with reading_errors(path):
        if suffix in (".jsonl", ".ndjson"):
            return read_jsonl(path)
        if suffix in (".csv", ".tsv"):
            return read_csv(path)
        if suffix == ".json":
            try:
                return read_json(path)
            except AnnotationError:
                first = read_text(path).lstrip()[:1]
                if first == "{" and _looks_like_jsonl(path):
                    return read_jsonl(path)
                raise
    raise AnnotationError(path, f"unknown annotation file type {suffix!r} (expected .json, .jsonl, .csv or .tsv)")


def _looks_like_jsonl(path: Path) -> bool:
    with path.open(encoding=ENCODING) as f:
        for line in f:
            if line.strip():
                try:
                    return isinstance(json.loads(line), dict)
                except json.JSONDecodeError:
                    return False
    return False


def check_unique(path: Path, keyed: Iterable[tuple[int | str, str | int]], what: str) -> None:
    """:class:`AnnotationError` at the first record whose key (``what``: "question id", "video id"),
    compared as a string, an earlier record holds: predictions and ``--resume`` are keyed by it.
    ``keyed``: (how errors name the record, its key) in file order."""
    seen: dict[str, int | str] = {}
    for where, key in keyed:
        if str(key) in seen:
            raise AnnotationError(path, f"{what} {key!r} is also used by record {seen[str(key)]}; "
                                        f"{what}s must be unique (predictions are keyed by them)", where)
        seen[str(key)] = where


class Fields:
    """Typed access to one record's fields; every failure names the file and the record."""

    def __init__(self, path: Path, index: int | str, record: Any):
        if not isinstance(record, Mapping):
            raise AnnotationError(path, f"expected an object with fields, got {type(record).__name__}", index)
        self.path, self.index, self.record = path, index, record

    def has(self, name: str) -> bool:
        value = self.record.get(name)
        return value is not None and value != ""

    def first_present(self, *names: str) -> str | None:
        get = self.record.get
        for name in names:
            value = get(name)
            if value is not None and value != "":
                return name
        return None

    def error(self, message: str) -> AnnotationError:
        return AnnotationError(self.path, message, self.index)

    def _get(self, names: tuple[str, ...], kind: str) -> tuple[str, Any]:
        """The first of ``names`` that holds a value; an error saying which is null or blank, else missing."""
        name = self.first_present(*names)
        if name is not None:
            return name, self.record[name]
        given = next((n for n in names if n in self.record), None)
        if given is not None and self.record[given] is None:
            raise self.error(f"field {given!r} must be {kind}, got null")
        if given is not None:
            raise self.error(f"field {given!r} is blank")
        alts = " or ".join(repr(n) for n in names)
        raise self.error(f"missing field {alts} (fields present: {', '.join(map(str, self.record)) or 'none'})")

    def str(self, *names: str) -> str:
        name, value = self._get(names, "a string")
        if not isinstance(value, str):
            raise self.error(f"field {name!r} must be a string, got {type(value).__name__} {value!r}")
        return value

    def id(self, *names: str) -> str | int:
        """A string or an integer (ids, video ids); CSV digit strings stay strings."""
        name, value = self._get(names, "a string or an integer")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(f"field {name!r} must be a string or an integer, got {type(value).__name__} {value!r}")
        return value

    def optional_seconds(self, name: str) -> float | None:
        if not self.has(name):
            return None
        value = self.record[name]
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self.error(f"field {name!r} must be a number of seconds, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"field {name!r} must be a number of seconds, got {type(value).__name__} {value!r}")
        return float(value)

    def segment(self) -> tuple[float | None, float | None]:
        """The optional ``start`` / ``end`` seconds, under the rule every segment follows
        (:func:`~mammut_video.errors.check_segment`: finite, start >= 0, end > 0 and after start)."""
        try:
            return check_segment(self.optional_seconds("start"), self.optional_seconds("end"))
        except ConfigError as err:
            raise self.error(str(err)) from None
