"""``curves.png``: training loss and the validation loss and metric against optimizer steps."""

from __future__ import annotations

from pathlib import Path

from mammut_video.runtime.rundir import atomic_write


def draw_curves(records: list[dict], path: Path, metric: str) -> None:
    """Plot ``metrics.jsonl`` records: left, train and validation loss; right, the validation ``metric``
    (the record field, "val_accuracy" or "val_cider", in per cent). Written atomically; no pyplot
    state is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, metric_ax = fig.subplots(1, 2)
    loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, alpha=0.8, label="train")
    scored = [r for r in val if metric in r]
    if val:
        loss_ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
        metric_ax.plot([r["step"] for r in scored], [r[metric] for r in scored], "o-", color="C2")
    loss_ax.set(xlabel="step", ylabel="loss", title="loss")
    loss_ax.legend()
    name = metric.removeprefix("val_")
    metric_ax.set(xlabel="step", ylabel=f"{name} (%)", title=f"validation {name}")
    if not val:
        metric_ax.text(0.5, 0.5, "no validation set (--val)", ha="center", va="center", transform=metric_ax.transAxes)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
