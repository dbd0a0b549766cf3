"""The paper's learning-curve figures: validation perplexity vs training seconds (Fig. 2a) and vs steps (Fig. 3),
and validation loss vs model FLOPs as the paper counts them (Fig. 10)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlc_export.atomic import atomic_path

AXIS_LABELS = {
    "elapsed_s": "training wall-clock (s)",
    "step": "gradient steps",
    "flops_paper": "model FLOPs as the paper counts them (6·N·tokens + attention), log scale",
}


def plot_curves(curves: dict[str, list[dict[str, Any]]], x: str, path: Path, title: str, y: str = "val_ppl") -> None:
    """One line per size of `y` (`val_ppl`, log scale, or `val_loss`) against `x` ("elapsed_s", "step" or
    "flops_paper", the last on a log scale), written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # headless machines, and no GUI event loop in worker processes
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, points in curves.items():
        pts = [p for p in points if p.get(y) is not None and p.get(x) is not None and (x != "flops_paper" or p[x] > 0)]
        if pts:
            ax.plot([p[x] for p in pts], [p[y] for p in pts], marker=".", label=name)
    if y == "val_ppl":
        ax.set_yscale("log")
    if x == "flops_paper":
        ax.set_xscale("log")
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel({"val_ppl": "validation MLM perplexity", "val_loss": "validation MLM loss (nats)",
                   "dev_bleu": "dev BLEU (sacrebleu 13a, greedy, fixed dev sample)",
                   "dev_loss": "dev loss per target token (nats)"}.get(y, y))
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(title="model")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
