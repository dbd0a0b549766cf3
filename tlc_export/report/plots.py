"""The report's figures as PNG bytes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from tlc_export.report.answers import timed_rows, usable_variants  # noqa: E402
from tlc_export.report.data import compression_label  # noqa: E402
from tlc_export.report.pareto import pareto_frontier  # noqa: E402
from tlc_export.scoring import REPORT_SPLIT  # noqa: E402
from tlc_export.tasks.base import Metric  # noqa: E402

_DPI = 110
ACCURACY = Metric(field="accuracy", label="accuracy", scale=1.0)  # classification's (`ClassificationFamily.metric`)


def _unit(metric: Metric) -> float:
    """Factor from a row's score to the plotted one: a fraction is shown in %, BLEU (0-100) as is."""
    return 100.0 / metric.scale


def _axis_label(split: str, metric: Metric) -> str:
    return f"{split} {metric.label}{' (%)' if metric.scale == 1.0 else ''}, 95 % interval"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _size_order(models: set[str], rows: list[dict[str, Any]]) -> list[str]:
    params = {m: max(int(r.get("params") or 0) for r in rows if r.get("model") == m) for m in models}
    return sorted(models, key=lambda m: (params[m], m))


def pretrain_curves_png(curves: dict[str, list[dict[str, Any]]]) -> bytes | None:
    """Validation perplexity vs wall-clock seconds and vs optimizer steps, one line per size."""
    if not curves:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for size, pts in curves.items():
        a.plot([p.get("elapsed_s", 0) for p in pts], [p["val_ppl"] for p in pts], marker=".", label=size)
        b.plot([p.get("step", 0) for p in pts], [p["val_ppl"] for p in pts], marker=".", label=size)
    for ax, xl in ((a, "wall-clock (s)"), (b, "optimizer steps")):
        ax.set_xlabel(xl)
        ax.set_ylabel("validation perplexity")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    a.set_title("MLM perplexity vs wall-clock")
    b.set_title("MLM perplexity vs steps")
    return _png(fig)


def _yerr(rows: list[dict[str, Any]], split: str, metric: Metric = ACCURACY) -> np.ndarray | None:
    """Asymmetric error bars (plotted units) from each row's `<split>_<field>_ci`; None if any is missing.
    A bootstrap interval need not contain the point estimate: a negative side is drawn as 0."""
    lo, hi = [], []
    f, k = metric.field, _unit(metric)
    for r in rows:
        ci = r.get(f"{split}_{f}_ci")
        if not ci:
            return None
        v = float(r[f"{split}_{f}"])
        lo.append(max(0.0, k * (v - ci[0])))
        hi.append(max(0.0, k * (ci[1] - v)))
    return np.array([lo, hi])


def _majority_line(ax: Any, majority: dict[str, Any] | None, split: str) -> None:
    if majority and majority.get("accuracy") is not None:
        ax.axhline(100 * majority["accuracy"], color="#b33", ls=":", lw=1.3, zorder=1,
                   label=f"majority class ({100 * majority['accuracy']:.1f} % of {split})")


def labelled(r: dict[str, Any], on_front: set[int]) -> bool:
    """Whether the accuracy-vs-storage plot writes a point's compression beside it: frontier and uncompressed fp32."""
    return id(r) in on_front or (not float(r.get("sparsity") or 0) and int(r.get("bits") or 32) == 32)


def accuracy_storage_png(variants: list[dict[str, Any]], split: str = REPORT_SPLIT,
                         majority: dict[str, Any] | None = None, *, metric: Metric = ACCURACY,
                         frontier_split: str | None = None) -> bytes | None:
    """The paper's Figure 6/7 analogue: `split` score (`metric`, the family's; 95 % error bars) vs
    storage (log x), one series per size, the Pareto frontier over all variants, and the majority-class
    line. Only the frontier's points and the uncompressed fp32 ones are labelled with their compression.

    The frontier is chosen on `frontier_split` (default: `split`, a staircase); chosen on another split
    (dev) it is drawn through the chosen variants at their `split` score, which need not rise."""
    f, k = metric.field, _unit(metric)
    fsplit = frontier_split or split
    pts = usable_variants(variants, select_split=fsplit, report_split=split, metric=f)
    if not pts:
        return None
    front = pareto_frontier(pts, x=lambda r: r["storage_bytes"], y=lambda r: float(r[f"{fsplit}_{f}"]))
    on_front = {id(r) for r in front}
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for m in _size_order({r["model"] for r in pts}, pts):
        rows = sorted((r for r in pts if r["model"] == m), key=lambda r: r["storage_bytes"])
        xs = [r["storage_bytes"] / 1e6 for r in rows]
        ys = [k * float(r[f"{split}_{f}"]) for r in rows]
        ax.errorbar(xs, ys, yerr=_yerr(rows, split, metric), fmt="o", ms=5, capsize=2, elinewidth=0.8, label=m, zorder=3)
        for r, x, y in zip(rows, xs, ys, strict=True):
            if labelled(r, on_front):  # ~40 labels overprint each other: the frontier and fp32 ones say enough
                ax.annotate(compression_label(r), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
    fx = [r["storage_bytes"] / 1e6 for r in front]
    fy = [k * float(r[f"{split}_{f}"]) for r in front]
    xmax = max(r["storage_bytes"] for r in pts) / 1e6
    if fsplit == split:
        ax.step(fx + [xmax], fy + [fy[-1]], where="post", color="black", lw=1.2, ls="--", zorder=2, label="Pareto frontier")
    else:
        ax.plot(fx, fy, color="black", lw=1.2, ls="--", marker="s", mfc="none", ms=9, zorder=2,
                label=f"Pareto frontier (chosen on {fsplit}, drawn at {split})")
    _majority_line(ax, majority, split)
    ax.set_xscale("log")
    ax.set_xlabel("storage (MB, log scale)")
    ax.set_ylabel(_axis_label(split, metric))
    ax.set_title(f"{metric.label[0].upper()}{metric.label[1:]} vs storage on {split}: each model size, every compression")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def accuracy_latency_png(bench: list[dict[str, Any]], split: str = REPORT_SPLIT,
                         majority: dict[str, Any] | None = None) -> bytes | None:
    """`split` accuracy (95 % error bars) vs p50 latency, one marker series per backend, one panel
    per batch size, with the majority-class line."""
    timed = timed_rows(bench, split=split)
    if not timed:
        return None
    batches = sorted({r["batch"] for r in timed})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4.5), squeeze=False)
    markers = "osD^v<>Px*"
    backends = sorted({f"{r['backend']}:{r['format']}:{r['dtype']}" for r in timed})
    for ax, b in zip(axes[0], batches, strict=True):
        for i, key in enumerate(backends):
            rows = [r for r in timed if r["batch"] == b and f"{r['backend']}:{r['format']}:{r['dtype']}" == key]
            if rows:
                ax.errorbar([r["latency_ms_p50"] for r in rows], [100 * float(r[f"{split}_accuracy"]) for r in rows],
                            yerr=_yerr(rows, split), fmt=markers[i % len(markers)], ms=5, capsize=2, elinewidth=0.8,
                            label=key.replace(":", " "))
        _majority_line(ax, majority, split)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap on narrow ranges
        ax.set_xlabel("p50 latency (ms, log scale)")
        ax.set_ylabel(f"{split} accuracy (%), 95 % interval")
        ax.set_title(f"batch {b}, seq {timed[0].get('seq_len')}")
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a point
    return _png(fig)


def png_bytes(fig: Any) -> bytes:
    """A finished figure as PNG bytes, closed afterwards (for figure modules beside this one)."""
    return _png(fig)
