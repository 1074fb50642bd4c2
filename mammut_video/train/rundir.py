"""A fine-tuning run directory: its files, the metrics log, and the training state.

    RUN_DIR/
      settings.json     what decides the run (``--resume`` refuses other settings)
      metrics.jsonl     one line per optimizer step ("train"), per validation ("val"), per clip
                        that failed to decode ("failed_clip") and at the end ("end")
      train_state.pt    model, optimizer, scheduler, gradient scaler, RNG states, data position
      last/  best/      checkpoints (``mv.load_model``); best/ by the validation metric
      curves.png        loss and validation metric against steps, redrawn at each validation and the end
      tokenizer.model   the SentencePiece vocabulary trained for a run from a preset

``train_state.pt`` is written next to its destination and renamed into place, so a kill at any
moment leaves the previous state or the new one; ``metrics.jsonl`` lines after the saved step
are dropped when the run resumes (they are done again).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammut_video.runtime.rundir import JsonlWriter, atomic_write, jsonl_lines, read_jsonl, write_text

METRICS = "metrics.jsonl"
STATE = "train_state.pt"
CURVES = "curves.png"
TOKENIZER_PREFIX = "tokenizer"  # -> tokenizer.model


@dataclass(frozen=True)
class RunFiles:
    """Paths of a run directory."""

    root: Path

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def state(self) -> Path:
        return self.root / STATE

    @property
    def curves(self) -> Path:
        return self.root / CURVES

    @property
    def last(self) -> Path:
        return self.root / "last"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def tokenizer(self) -> Path:
        return self.root / f"{TOKENIZER_PREFIX}.model"

    def results(self) -> list[Path]:
        """What an earlier run leaves (``--overwrite`` removes it, an existing one needs ``--resume``)."""
        return [self.metrics, self.state, self.curves, self.last, self.best, self.tokenizer]


class MetricsLog:
    """``metrics.jsonl`` (rank 0): every record also kept in ``records`` for the curves."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.records: list[dict] = []
        if resume_step is not None:
            kept = [r for r in read_jsonl(path, repair=True) if int(r.get("step", 0)) <= resume_step]
            write_text(path, jsonl_lines(kept))  # what came after the saved state is done again
            self.records = kept
        self._writer = JsonlWriter(path)

    def write(self, record: dict) -> None:
        self.records.append(record)
        self._writer.write([record])

    def failed_clip(self, step: int, path: str, error: str, data: str) -> None:
        """The record of a clip that could not be decoded; ``data``: "training" or "validation"."""
        self.write({"kind": "failed_clip", "step": step, "path": path, "error": error, "data": data})

    def close(self) -> None:
        self._writer.close()


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the training state atomically (a kill leaves the previous file whole)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    """The training state saved by :func:`save_state` (RNG states hold numpy arrays: not weights-only)."""
    return torch.load(path, map_location="cpu", weights_only=False)
