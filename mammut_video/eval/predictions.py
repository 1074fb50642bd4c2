"""The predictions of an evaluation: one JSON line per item, per rank while running, merged at the end.

One line per item (a question, or a video for captioning / retrieval), keyed by a field
(``question_id`` or ``video_id``) whose value is compared as a string. While a run goes, every
rank appends to its own file (``predictions.jsonl`` alone, ``predictions.rank{r}.jsonl`` under
torchrun); at the end rank 0 merges every file into ``predictions.jsonl`` in split order. Reading
every rank's file makes ``--resume`` work even when the number of processes changed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mammut_video.runtime.rundir import JsonlWriter, jsonl_lines, keyed, read_jsonl, write_text

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"


def read_predictions(path: str | Path, key: str, repair: bool = False) -> dict[str, dict]:
    """``{str(record[key]): record}`` of one predictions file (later lines win); see ``read_jsonl``."""
    return keyed(read_jsonl(path, require=key, repair=repair), key)


def prediction_files(out_dir: str | Path) -> list[Path]:
    """The merged ``predictions.jsonl`` and any per-rank ``predictions.rank{r}.jsonl`` in ``out_dir``."""
    out_dir = Path(out_dir)
    merged = out_dir / PREDICTIONS_FILE
    return ([merged] if merged.exists() else []) + sorted(out_dir.glob("predictions.rank*.jsonl"))


def load_predictions(out_dir: str | Path, key: str, repair_path: Path | None = None) -> dict[str, dict]:
    """Every record of every predictions file in ``out_dir``, by key; ``repair_path`` gets a
    half-written last line cut off."""
    done: dict[str, dict] = {}
    for p in prediction_files(out_dir):
        done.update(read_predictions(p, key, repair=p == repair_path))
    return done


def merge_predictions(out_dir: str | Path, key: str, order: list[str]) -> dict[str, dict]:
    """Merge every predictions file of ``out_dir`` into ``predictions.jsonl`` and return the records
    of ``order`` (this run's selection, the ones to score), in that order.

    Nothing is dropped: records whose key is not in ``order`` (finished by an earlier run with a
    larger ``--limit``) stay in the file, after the selected ones, in the order they were read.
    The per-rank files are removed once the merged file is in place.
    """
    out_dir = Path(out_dir)
    done = load_predictions(out_dir, key)
    merged = {k: done[k] for k in order if k in done}
    others = [r for k, r in done.items() if k not in merged]
    write_text(out_dir / PREDICTIONS_FILE, jsonl_lines([*merged.values(), *others]))
    if others:
        log.info("%s also keeps %d items outside this run's selection (an earlier run's larger --limit); the "
                 "metrics cover the %d selected", out_dir / PREDICTIONS_FILE, len(others), len(order))
    for p in out_dir.glob("predictions.rank*.jsonl"):
        p.unlink()
    return merged


class PredictionStore:
    """The loop's result store for an evaluation (see ``mammut_video.runtime.loop``): this rank's
    predictions file, appended batch by batch."""

    def __init__(self, out_dir: Path, key: str, rank: int, world_size: int) -> None:
        self.out_dir, self.key = out_dir, key
        name = PREDICTIONS_FILE if world_size == 1 else f"predictions.rank{rank}.jsonl"
        self.path = out_dir / name
        self._writer: JsonlWriter | None = None

    def finished(self) -> set[str]:
        done = load_predictions(self.out_dir, self.key, repair_path=self.path)
        return {k for k, r in done.items() if not r.get("error")}  # failed clips are tried again

    def append(self, results: list[dict]) -> None:
        if self._writer is None:
            self._writer = JsonlWriter(self.path)
        self._writer.write(results)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
