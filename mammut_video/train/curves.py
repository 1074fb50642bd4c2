"""``curves.png``: training loss and the validation loss and metric against optimizer steps."""

from __future__ import annotations

from pathlib import Path

from mammut_video.runtime.rundir import atomic_write


def draw_curves(records: list[dict], path: Path, metric: str) -> None:
    """Plot ``metrics.jsonl`` records: left, train and validation loss; right, the validation ``metric``
    (the record field, "val_accuracy" or "val_cider", in per cent), with QA's per-type accuracies as thinner
    lines; the loss on a log scale. Written atomically; no pyplot
    state is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [r for r in records if r.get("kind") == "train" and "loss" in r]  # a step whose clips all failed has none
    val = [r for r in records if r.get("kind") == "val"]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, metric_ax = fig.subplots(1, 2)
    loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, alpha=0.8, label="train")
    scored = [r for r in val if metric in r]
    if val:
        loss_ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
        metric_ax.plot([r["step"] for r in scored], [r[metric] for r in scored], "o-", color="C2", lw=2,
                       label="all")
        # QA: one thinner line per question type, so a type that lags is seen
        types = sorted({t for r in scored for t in r.get("val_per_type", {})})
        for i, qtype in enumerate(types if len(types) > 1 else []):
            points = [(r["step"], r["val_per_type"][qtype]) for r in scored if qtype in r.get("val_per_type", {})]
            metric_ax.plot(*zip(*points), ".--", lw=1, color=f"C{3 + i}", label=qtype)
        if len(types) > 1:
            metric_ax.legend(fontsize="small")
    if train and min(r["loss"] for r in train) > 0:
        loss_ax.set_yscale("log")  # the first steps' loss would flatten the rest of the curve
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
