"""``metrics.json`` and the terminal table of an evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_metrics(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically (tmp file + rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _rows(task: str, metrics: dict) -> list[tuple[str, str]]:
    if task.endswith("-qa"):
        rows = [("accuracy", f"{metrics['accuracy']:.2f}  ({metrics['correct']}/{metrics['total']})")]
        rows += [(f"  {t}", f"{m['accuracy']:.2f}  ({m['correct']}/{m['total']})")
                 for t, m in metrics["per_type"].items()]
        rows.append(("no prediction", str(metrics["missing"])))
        return rows
    if task.endswith("-caption"):
        rows = [(name, f"{100 * v:.2f}" if isinstance(v, float) else str(v)) for name, v in metrics["scores"].items()]
        rows.append(("videos", f"{metrics['captioned']}/{metrics['total']} captioned"))
        return rows
    rows = []
    for direction in ("text_to_video", "video_to_text"):
        m = metrics[direction]
        recalls = "  ".join(f"{k} {v:.1f}" for k, v in m.items() if k.startswith("R@"))
        rows.append((direction.replace("_to_", "->").replace("text", "t").replace("video", "v"),
                     f"{recalls}  MdR {m['median_rank']:.1f}  MnR {m['mean_rank']:.1f}"))
    rows.append(("videos", f"{metrics['embedded']}/{metrics['total']} embedded"))
    return rows


def format_table(task: str, split: str, metrics: dict, failed: int) -> str:
    """A two-column table of the metrics (caption scores shown x100, as papers report them)."""
    rows = [("task", f"{task} ({split})")] + _rows(task, metrics)
    if failed:
        rows.append(("failed videos", f"{failed} (listed in metrics.json)"))
    width = max(len(k) for k, _ in rows)
    rule = "-" * (width + 2 + max(len(v) for _, v in rows))
    return "\n".join([rule] + [f"{k.ljust(width)}  {v}" for k, v in rows] + [rule])
