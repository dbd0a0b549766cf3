"""The paper's learning-curve figures: validation perplexity vs training seconds (Fig. 2a) and vs steps (Fig. 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlc_export.atomic import atomic_path


def plot_curves(curves: dict[str, list[dict[str, Any]]], x: str, path: Path, title: str) -> None:
    """One line per size of `val_ppl` against `x` ("elapsed_s" or "step"), log-scale y, written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # headless machines, and no GUI event loop in worker processes
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, points in curves.items():
        pts = [p for p in points if p.get("val_ppl") is not None]
        if pts:
            ax.plot([p[x] for p in pts], [p["val_ppl"] for p in pts], marker=".", label=name)
    ax.set_yscale("log")
    ax.set_xlabel({"elapsed_s": "training wall-clock (s)", "step": "gradient steps"}.get(x, x))
    ax.set_ylabel("validation MLM perplexity")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(title="model")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
