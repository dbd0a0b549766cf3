"""Learning curves against the paper's three clocks: wall-clock seconds, gradient steps and model
FLOPs as the paper counts them (`flops_paper`: 6·N·tokens + the attention term, Figure 10).

One run: validation loss vs FLOPs, one line per size. A sweep: the points' curves overlaid,
per size (one line per point, Figures 13 and 14) and per point (one line per size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tlc_export.report.plots import plt, png_bytes

AXES = (("elapsed_s", "training wall-clock (s)"), ("step", "gradient steps"),
        ("flops_paper", "model FLOPs (paper's count, log scale)"))


def _xy(points: Sequence[dict[str, Any]], x: str) -> tuple[list[float], list[float]]:
    pts = [p for p in points if p.get("val_loss") is not None and p.get(x) is not None
           and (x != "flops_paper" or float(p[x]) > 0)]
    pts.sort(key=lambda p: float(p[x]))
    return [float(p[x]) for p in pts], [float(p["val_loss"]) for p in pts]


def flops_curve_png(curves: dict[str, list[dict[str, Any]]]) -> bytes | None:
    """Figure 10: validation loss vs model FLOPs, one line per size."""
    lines = {k: _xy(v, "flops_paper") for k, v in curves.items()}
    lines = {k: v for k, v in lines.items() if v[0]}
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for size, (xs, ys) in lines.items():
        ax.plot(xs, ys, marker=".", label=size)
    ax.set_xscale("log")
    ax.set_xlabel("model FLOPs as the paper counts them: 6·N·tokens + 12·L·s·h·tokens (log scale)")
    ax.set_ylabel("validation MLM loss (nats)")
    ax.set_title("Validation loss vs FLOPs (Figure 10)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, title="model")
    return png_bytes(fig)


def overlay_png(groups: dict[str, dict[str, list[dict[str, Any]]]], title: str, legend_title: str) -> bytes | None:
    """One row of three panels (wall-clock, steps, FLOPs) per group, one line per member.

    `groups[row][line] = curve points`: per size with a line per sweep point, or per point with a
    line per size.
    """
    groups = {g: {k: v for k, v in members.items() if v} for g, members in groups.items()}
    groups = {g: m for g, m in groups.items() if m}
    if not groups:
        return None
    fig, axes = plt.subplots(len(groups), 3, figsize=(16, 3.6 * len(groups)), squeeze=False)
    for row, (group, members) in zip(axes, groups.items(), strict=True):
        for ax, (x, label) in zip(row, AXES, strict=True):
            for name, pts in members.items():
                xs, ys = _xy(pts, x)
                if xs:
                    ax.plot(xs, ys, marker=".", ms=3, label=name)
            if x == "flops_paper":
                ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("validation loss (nats)")
            ax.set_title(group, fontsize=9)
            ax.grid(alpha=0.3, which="both")
        row[0].legend(fontsize=7, title=legend_title, title_fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return png_bytes(fig)
