"""Run directories: atomic writes, append-only JSON lines that survive a crash, and ``settings.json``.

A long command (eval, embed, finetune) writes into one output folder. Files replaced as a whole
(``metrics.json``, a merged predictions file, ``settings.json``) are written next to their
destination and renamed into place (:func:`atomic_write`), so a crash never leaves half a file.
Results produced as the run goes are appended as JSON lines, flushed and fsynced per batch
(:class:`JsonlWriter`); reading back (:func:`read_jsonl`) tolerates the half-written last line a
crash can leave and cuts it off before appending again.

``settings.json`` records what decides the results (checkpoint, data, frames, protocol, ...) when
a run starts. :func:`open_run_dir` is the one place that decides what happens to an output
folder that already holds results: refused without ``resume`` / ``overwrite``; on ``resume``
refused when the settings differ (the message lists what differs); on ``overwrite`` emptied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from mammut_video.errors import ConfigError, MammutVideoError

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"


class RunDirError(MammutVideoError):
    """An output folder, or a file in it, that cannot be used as it is."""


def _umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new plain file: 0o666 minus the umask (``mkstemp`` and safetensors would give 0o600)."""
    return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (mode 0o666 minus the umask).

    The temporary file sits beside ``path`` (same file system, so the rename is atomic) and is
    removed when ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, fsynced before the rename."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def jsonl_lines(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


class JsonlWriter:
    """Appends records to a JSON-lines file, one flush and fsync per :meth:`write` call."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")

    def write(self, records: Iterable[dict]) -> None:
        self._file.write(jsonl_lines(records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike, require: str | None = None, repair: bool = False) -> list[dict]:
    """The records of a JSON-lines file written by :class:`JsonlWriter` (none if it does not exist).

    A last line without its newline that is not valid JSON is a write cut short by a crash: it is
    ignored, and cut off the file when ``repair`` is true. Any other bad line (not JSON, not an
    object, or without the field ``require``) raises :class:`RunDirError` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records: list[dict] = []
    good_end = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        is_last = number == len(lines)
        if raw.strip():
            try:
                record = json.loads(raw)
                if not isinstance(record, dict) or (require is not None and require not in record):
                    raise ValueError(f"not an object with a {require!r} field" if require else "not an object")
            except ValueError as err:
                if is_last:  # unterminated last line: a crash mid-write
                    break
                raise RunDirError(f"{path}: line {number} is not a result record ({err})") from None
            records.append(record)
        good_end += len(raw) + (0 if is_last else 1)
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


def keyed(records: Iterable[dict], key: str) -> dict[str, dict]:
    """``{str(record[key]): record}``; a later record replaces an earlier one with the same key."""
    return {str(r[key]): r for r in records}


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of the bytes of the file at ``path`` (read in 1 MiB blocks).

    A content fingerprint for ``settings.json``: recording it beside a file's path lets
    ``--resume`` notice a file edited in place (same path, other contents), which the path alone
    cannot. Equals ``sha256sum PATH``. ``OSError`` when the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Settings that earlier versions did not record (or, for finetune's precision, recorded as null for
# the device's default): an earlier run's settings.json without them cannot be checked for them,
# which is warned about, not refused, so a run started before an upgrade can still be resumed.
LATER_SETTINGS = ("annotation_sha256", "precision")


def _unrecorded(key: str, before: dict[str, object]) -> bool:
    return key.rsplit(".", 1)[-1] in LATER_SETTINGS and before.get(key) is None


def settings_differences(before: dict, now: dict) -> list[str]:
    """``"name: X before, Y now"`` for every setting that differs (nested keys dotted), a setting of
    ``LATER_SETTINGS`` that ``before`` does not record excepted."""
    a, b = _flatten(before), _flatten(now)
    return [f"{k}: {a.get(k, '(not recorded)')} before, {b.get(k, '(not set)')} now"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not _unrecorded(k, a)]


def unrecorded_settings(before: dict, now: dict) -> list[str]:
    """The settings of ``now`` that an earlier version left out of ``before`` (not checked on resume)."""
    a, b = _flatten(before), _flatten(now)
    return [k for k in sorted(b) if _unrecorded(k, a) and b[k] is not None]


def read_settings(out_dir: str | os.PathLike) -> dict | None:
    """The settings recorded in ``out_dir`` by the run that started there, or None."""
    path = Path(out_dir) / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise RunDirError(f"{path}: unreadable run settings ({err}); pass --overwrite to start "
                          "again, or choose a new --out") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object of run settings; pass --overwrite to start "
                          "again, or choose a new --out")
    return data


def file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing one of ``folder`` and its parents when it is a file, not a folder (then
    ``folder`` cannot be created); None when the path is clear."""
    nearest = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return nearest if nearest is not None and not nearest.is_dir() else None


def _make_folder(out_dir: Path) -> None:
    """``mkdir -p out_dir``, a failure (permission, read-only disk) told in one line."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"cannot create the output folder {out_dir}: {err.strerror or err}") from None


def check_run_dir(out_dir: Path, results: list[Path], settings: dict | None, resume: bool,
                  overwrite: bool) -> bool:
    """Decide whether a run may write into ``out_dir``, which already holds ``results`` (maybe none).

    Refuses (:class:`RunDirError`) results without ``resume`` or ``overwrite``, and on ``resume``
    results made under other ``settings``. Returns False when results exist with no recorded
    settings (a run of an older version: they cannot be checked), True otherwise.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: pass one of them")
    blocked = file_in_the_way(out_dir)
    if blocked is not None:
        raise RunDirError(f"{blocked} is a file, not a folder")
    found = [p for p in results if p.exists() and (p.is_dir() or p.stat().st_size > 0)]
    if not found or overwrite:
        return True
    if not resume:
        raise RunDirError(f"{found[0]} already holds results: pass --resume to continue that run, "
                          "or --overwrite to start again")
    if settings is None:
        return True
    before = read_settings(out_dir)
    if before is None:
        return False
    diffs = settings_differences(before, settings)
    if diffs:
        raise RunDirError(
            f"--resume: the results in {out_dir} were made with other settings ({'; '.join(diffs)}), "
            "so continuing would mix them. Pass --overwrite to discard them and start again, or choose a new --out")
    unchecked = unrecorded_settings(before, settings)
    if unchecked:
        log.warning("%s was written by an older version, which did not record %s: resuming without checking it",
                    out_dir / SETTINGS_FILE, ", ".join(unchecked))
    return True


def open_run_dir(out_dir: Path, results: Callable[[], list[Path]], settings: dict | None, resume: bool,
                 overwrite: bool, ctx: Any) -> None:
    """Make ``out_dir`` ready for a run on every rank of ``ctx`` (a ``DistContext``).

    Every rank checks (:func:`check_run_dir`, same files, same verdict); then rank 0 deletes the
    earlier results on ``overwrite`` and records ``settings``. Returns when every rank may go on.
    """
    checked = check_run_dir(out_dir, results(), settings, resume, overwrite)
    _make_folder(out_dir)
    ctx.barrier()

    def prepare() -> None:
        if overwrite:
            for p in results():
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        if not checked:
            log.warning("%s has no %s (written by an older version): cannot check that its results were made "
                        "with the same checkpoint and settings", out_dir, SETTINGS_FILE)
        if settings is not None:
            write_json(out_dir / SETTINGS_FILE, settings)

    ctx.on_main(prepare)
