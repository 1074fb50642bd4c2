"""Append-only JSON-lines prediction files that make an evaluation resumable.

One line per item (a question, or a video for captioning / retrieval), keyed by a field
(``question_id`` or ``video_id``) whose value is compared as a string. Lines are flushed after
every batch, so a crash loses at most the batch in flight; reading back tolerates a truncated
last line (a crash mid-write) and cuts it off before appending.

``settings.json`` beside them records what decided those predictions (checkpoint, data, frames,
protocol, ...) when the run started; ``--resume`` refuses to continue under other settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO


class PredictionFileError(RuntimeError):
    """A predictions file cannot be used (corrupt line, or it exists and would be overwritten)."""


def read_predictions(path: str | Path, key: str, repair: bool = False) -> dict[str, dict]:
    """Read ``path`` back into ``{str(record[key]): record}`` (later lines win).

    A last line without its newline that is not valid JSON is a write cut short by a crash: it
    is ignored, and cut off the file when ``repair`` is true. Any other bad line raises
    :class:`PredictionFileError` naming the file and the line number.
    """
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    records: dict[str, dict] = {}
    good_end = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        is_last = number == len(lines)
        if not raw.strip():
            good_end += len(raw) + (0 if is_last else 1)
            continue
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or key not in record:
                raise ValueError(f"not an object with a {key!r} field")
        except ValueError as err:
            if is_last:  # unterminated last line: a crash mid-write
                break
            raise PredictionFileError(f"{path}: line {number} is not a prediction record ({err})") from None
        records[str(record[key])] = record
        good_end += len(raw) + (0 if is_last else 1)
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


class PredictionWriter:
    """Appends records to a JSON-lines file, one flush (and fsync) per :meth:`write` call."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")

    def write(self, records: Iterable[dict]) -> None:
        self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_can_write(out_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber earlier predictions unless ``--resume`` or ``--overwrite`` says what to do."""
    if resume and overwrite:
        raise PredictionFileError("--resume and --overwrite contradict each other: pass one of them")
    if resume or overwrite:
        return
    found = [p for p in prediction_files(out_dir) if p.stat().st_size > 0]
    if found:
        raise PredictionFileError(
            f"{found[0]} already holds predictions: pass --resume to continue that evaluation, "
            "or --overwrite to start again"
        )


SETTINGS_FILE = "settings.json"


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_differences(before: dict, now: dict) -> list[str]:
    """``"name: X before, Y now"`` for every setting that differs (nested keys dotted)."""
    a, b = _flatten(before), _flatten(now)
    return [f"{k}: {a.get(k, '(not recorded)')} before, {b.get(k, '(not set)')} now"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def read_settings(out_dir: str | Path) -> dict | None:
    """The settings recorded in ``out_dir`` by the run that started there, or None."""
    path = Path(out_dir) / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise PredictionFileError(f"{path}: unreadable run settings ({err}); pass --overwrite to start "
                                  "again, or choose a new --out") from None
    if not isinstance(data, dict):
        raise PredictionFileError(f"{path}: expected a JSON object of run settings; pass --overwrite to start "
                                  "again, or choose a new --out")
    return data


def check_resume_settings(out_dir: str | Path, settings: dict) -> bool:
    """On ``--resume``: refuse when ``out_dir``'s predictions were made under other settings.

    Returns False when earlier predictions exist but no settings were recorded (a run by an
    older version), so they cannot be checked; True otherwise.
    """
    if not any(p.stat().st_size > 0 for p in prediction_files(out_dir)):
        return True  # nothing to mix with
    before = read_settings(out_dir)
    if before is None:
        return False
    diffs = settings_differences(before, settings)
    if diffs:
        raise PredictionFileError(
            f"--resume: the predictions in {out_dir} were made with other settings ({'; '.join(diffs)}), "
            "so continuing would mix them. Pass --overwrite to discard them and start again, or choose a new --out"
        )
    return True


def write_settings(out_dir: str | Path, settings: dict) -> None:
    """Record ``settings`` in ``out_dir`` (atomically)."""
    path = Path(out_dir) / SETTINGS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def prediction_files(out_dir: str | Path) -> list[Path]:
    """The merged ``predictions.jsonl`` and any per-rank ``predictions.rank{r}.jsonl`` in ``out_dir``."""
    out_dir = Path(out_dir)
    merged = out_dir / "predictions.jsonl"
    return ([merged] if merged.exists() else []) + sorted(out_dir.glob("predictions.rank*.jsonl"))


def remove_predictions(out_dir: str | Path) -> None:
    """Delete every predictions file in ``out_dir`` (``--overwrite``)."""
    for p in prediction_files(out_dir):
        p.unlink()


def load_done(out_dir: str | Path, key: str, repair_path: Path | None = None) -> dict[str, dict]:
    """All records already written to any predictions file in ``out_dir``, by key.

    Reading every rank's file makes resume work even when the number of processes changed.
    ``repair_path`` (this process's own file) gets a truncated last line cut off.
    """
    done: dict[str, dict] = {}
    for p in prediction_files(out_dir):
        done.update(read_predictions(p, key, repair=p == repair_path))
    return done


def merge_predictions(out_dir: str | Path, key: str, order: list[str]) -> dict[str, dict]:
    """Merge every predictions file of ``out_dir`` into ``predictions.jsonl`` in ``order``.

    Records whose key is not in ``order`` are dropped (e.g. from a larger earlier ``--limit``);
    the per-rank files are removed once the merged file is in place. Returns the merged records.
    """
    out_dir = Path(out_dir)
    done = load_done(out_dir, key)
    merged = {k: done[k] for k in order if k in done}
    tmp = out_dir / "predictions.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged.values()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_dir / "predictions.jsonl")
    for p in out_dir.glob("predictions.rank*.jsonl"):
        p.unlink()
    return merged
