"""The checkpoint studies of one run: compressibility vs convergence (the paper's Figure 8) and
finetuning at matched pretraining perplexity (Table 2).

Inputs (`finetune.from`, see `tlc_export.finetune.checkpoints`): `finetune/results.json`
(`from`, `models`, `checkpoints`, `matched_perplexity`; every row's `pretrained_from`),
`compress/results.json` and `compress/checkpoints.json` (variant rows; `model` is the target key,
`4L-256H` or `4L-256H@k50`) and the rows' per-example `predictions` files, from which every
accuracy and drop gets its 95 % interval on the test split (dev selected the models).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlc_export.errors import TlcError
from tlc_export.predictions import load_predictions
from tlc_export.stats import accuracy_interval, paired_bootstrap_diff, wilson_interval

SPLIT = "test"
FIG8_BITS = 4


@dataclass
class Study:
    mode: str | None  # finetune.from, None without a finetune stage
    fig8: list[dict[str, Any]] = field(default_factory=list)  # one row per (size, checkpoint)
    table2: list[dict[str, Any]] = field(default_factory=list)  # one row per size
    match: dict[str, Any] | None = None  # finetune/results.json `matched_perplexity`
    fig8_note: str | None = None  # why Figure 8 is not shown
    table2_note: str | None = None


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _rows(data: Any, key: str) -> list[dict[str, Any]]:
    rows = data.get(key, []) if isinstance(data, dict) else (data or [])
    return [r for r in rows if isinstance(r, dict)]


def _correct(run_dir: Path, row: dict[str, Any]) -> Any:
    """Per-example correctness on the reporting split, or None without predictions."""
    rel = row.get("predictions")
    if not rel:
        return None
    try:
        splits = load_predictions(run_dir / rel)
    except (TlcError, OSError):
        return None
    sp = splits.get(SPLIT)
    return None if sp is None else sp.correct


def _dense_and_b4(variants: Sequence[dict[str, Any]], key: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    mine = [r for r in variants if r.get("model") == key and not float(r.get("sparsity") or 0) and not r.get("grid")]
    dense = next((r for r in mine if int(r.get("bits") or 32) == 32), None)
    b4 = next((r for r in mine if int(r.get("bits") or 32) == FIG8_BITS), None)
    return dense, b4


def _accuracy(run_dir: Path, row: dict[str, Any], n: int | None) -> tuple[float | None, tuple[float, float] | None, int | None]:
    """Accuracy on the reporting split with its 95 % Wilson interval: from the per-example predictions,
    else from the row's own interval, else from the accuracy and the split's size `n`."""
    flags = _correct(run_dir, row)
    if flags is not None and len(flags):
        acc = accuracy_interval(flags)
        return acc.accuracy, (acc.ci_low, acc.ci_high), int(len(flags))
    value = row.get(f"{SPLIT}_accuracy")
    if value is None:
        return None, None, None
    ci = row.get(f"{SPLIT}_accuracy_ci")
    if ci:
        return float(value), (float(ci[0]), float(ci[1])), n
    if n:
        return float(value), wilson_interval(round(float(value) * n), n), n
    return float(value), None, None


def checkpoint_study(run_dir: str | Path) -> Study:
    root = Path(run_dir)
    ft = _json(root / "finetune" / "results.json")
    if not isinstance(ft, dict):
        return Study(None, fig8_note="no finetune results in this run", table2_note="no finetune results in this run")
    mode = ft.get("from", "final")
    targets = _rows(ft, "models") + _rows(ft, "checkpoints")
    variants = _rows(_json(root / "compress" / "results.json"), "variants")
    variants += _rows(_json(root / "compress" / "checkpoints.json"), "variants")
    study = Study(mode, match=ft.get("matched_perplexity"))

    for t in targets:
        src = t.get("pretrained_from") or {}
        key = str(t.get("model"))
        dense, b4 = _dense_and_b4(variants, key)
        if dense is None or b4 is None:
            continue
        row: dict[str, Any] = {
            "model": key, "size": t.get("size") or key, "params": t.get("params"), "checkpoint": src.get("tag"),
            "fraction": src.get("fraction"), "elapsed_s": src.get("elapsed_s"), "step": src.get("step"),
            "pretrain_val_ppl": src.get("val_ppl"), "dense": dense.get("variant"), "quantized": b4.get("variant"),
        }
        a, b = _correct(root, dense), _correct(root, b4)
        if a is not None and b is not None and len(a) == len(b) and len(a):
            drop, lo, hi = paired_bootstrap_diff(a, b)
            row.update(drop=drop, drop_interval=[lo, hi], examples=int(len(a)),
                       accuracy_dense=float(a.mean()), accuracy_quantized=float(b.mean()))
        elif dense.get(f"{SPLIT}_accuracy") is not None and b4.get(f"{SPLIT}_accuracy") is not None:
            row.update(drop=float(dense[f"{SPLIT}_accuracy"]) - float(b4[f"{SPLIT}_accuracy"]), drop_interval=None,
                       accuracy_dense=float(dense[f"{SPLIT}_accuracy"]), accuracy_quantized=float(b4[f"{SPLIT}_accuracy"]))
        else:
            continue
        study.fig8.append(row)
    study.fig8.sort(key=lambda r: (int(r.get("params") or 0), str(r["size"]), float(r.get("fraction") or 1.0)))
    per_size = {}
    for r in study.fig8:
        per_size.setdefault(r["size"], []).append(r)
    if not study.fig8:
        study.fig8_note = (f"needs {FIG8_BITS}-bit variants of the finetuned models (compress.quantize.bits with "
                           f"{FIG8_BITS}) — " + ("run the compress stage" if mode == "every-kept" else
                                                 "and finetune.from: every-kept with pretrain.keep_checkpoints_at"))
    elif max(len(v) for v in per_size.values()) < 2:
        study.fig8_note = ("one checkpoint per size: set finetune.from: every-kept and pretrain.keep_checkpoints_at "
                           "to see the drop as pretraining converges")

    by_key = {str(t.get("model")): t for t in targets}
    match = study.match or {}
    choices = match.get("choices") or {}
    for size, choice in choices.items():
        key = size if choice.get("tag") == "final" else f"{size}@{choice.get('tag')}"
        t = by_key.get(key)
        if t is None or (mode == "final" and key != size):
            continue
        if mode == "final" and choice.get("tag") != "final":
            continue
        acc, ci, n = _accuracy(root, t, (ft.get("examples") or {}).get(SPLIT))
        study.table2.append({
            "model": size, "params": t.get("params"), "checkpoint": choice.get("tag"), "finetuned_as": key,
            "fraction": choice.get("fraction"), "elapsed_s": choice.get("elapsed_s"), "step": choice.get("step"),
            "pretrain_val_ppl": choice.get("val_ppl"), "target_ppl": match.get("target_ppl"),
            "first_evaluated": (match.get("first_evaluated") or {}).get(size),
            f"{SPLIT}_accuracy": acc, f"{SPLIT}_accuracy_ci": list(ci) if ci else None, "examples": n,
            "dev_accuracy": t.get("dev_accuracy"), "lr": t.get("lr"), "seed": t.get("seed", t.get("seeds")),
        })
    study.table2.sort(key=lambda r: (int(r.get("params") or 0), r["model"]))
    if not study.table2:
        study.table2_note = ("needs finetune.from: matched-perplexity (or every-kept) with pretrain.keep_checkpoints_at"
                             if mode == "final" else "no finetuned model at the matched checkpoints yet")
    elif len(study.table2) < len(choices):
        study.table2_note = "some sizes' matched checkpoints were not finetuned"
    return study


def _pct(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * float(x):.1f}"


def table2_lines(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Header and rows of Table 2 as text cells (shared by HTML and Markdown)."""
    out = [["model", "checkpoint", "% of budget", "step", "pretrain val ppl", "curve first at target (% of budget)",
            f"{SPLIT} acc % [95 %]", "dev acc %"]]
    for r in rows:
        ci = r.get(f"{SPLIT}_accuracy_ci")
        acc = _pct(r.get(f"{SPLIT}_accuracy")) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")
        out.append([str(r["model"]), str(r.get("checkpoint")), _pct(r.get("fraction")),
                    str(r.get("step") if r.get("step") is not None else "-"),
                    f"{r['pretrain_val_ppl']:.2f}" if r.get("pretrain_val_ppl") is not None else "-",
                    _first_evaluated(r.get("first_evaluated")), acc, _pct(r.get("dev_accuracy"))])
    return out


def _first_evaluated(ev: dict[str, Any] | None) -> str:
    """Where the learning curve first reached the target: a kept checkpoint much later means the kept grid is coarse."""
    if not ev:
        return "-"
    return f"{_pct(ev.get('fraction'))} (step {ev.get('step')}, ppl {float(ev['val_ppl']):.2f})"


def fig8_png(panels: dict[str, Sequence[dict[str, Any]]]) -> bytes | None:
    """Accuracy drop at 4 bits vs the checkpoint's share of the pretraining budget, one line per size,
    one panel per entry of `panels` (a run, or each point of a sweep)."""
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    from tlc_export.report.plots import plt, png_bytes

    n = len(panels)
    cols = min(n, 2)
    rows_n = -(-n // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.2 * cols, 4.2 * rows_n), squeeze=False)
    for ax, (title, rows) in zip(axes.flat, panels.items(), strict=False):
        sizes: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            sizes.setdefault(str(r["size"]), []).append(r)
        for size, pts in sizes.items():
            pts = sorted(pts, key=lambda r: float(r.get("fraction") or 1.0))
            xs = [100 * float(r.get("fraction") or 1.0) for r in pts]
            ys = [100 * float(r["drop"]) for r in pts]
            err = [[100 * (r["drop"] - r["drop_interval"][0]) if r.get("drop_interval") else 0 for r in pts],
                   [100 * (r["drop_interval"][1] - r["drop"]) if r.get("drop_interval") else 0 for r in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=size)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("pretraining checkpoint (% of the time budget)")
        ax.set_ylabel(f"{SPLIT} accuracy drop at {FIG8_BITS} bits (points)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="model")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Compressibility vs convergence (Figure 8): {FIG8_BITS}-bit drop per checkpoint, 95 % intervals",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return png_bytes(fig)


def sections_html(study: Study, flops_png: bytes | None, fig8: bytes | None) -> str:
    """The run report's Figure 10, Figure 8 and Table 2 sections."""
    from tlc_export.report.html import esc, img

    parts = ["<h2 id='flops'>Validation loss vs FLOPs (Figure 10)</h2>",
             img(flops_png, "flops-plot", "validation loss vs model FLOPs as the paper counts them"),
             "<h2 id='fig8'>Compressibility vs convergence (Figure 8)</h2>"]
    parts.append(img(fig8, "fig8-plot", "accuracy drop at 4 bits vs pretraining checkpoint") if fig8 else
                 f"<p class='note'>Not shown: {esc(study.fig8_note)}</p>")
    parts.append("<h2 id='table2'>Finetuning at matched pretraining perplexity (Table 2)</h2>")
    if study.table2:
        target = (study.match or {}).get("target_ppl")
        lines = table2_lines(study.table2)
        head = "".join(f"<th class='l'>{esc(h)}</th>" for h in lines[0])
        body = "".join("<tr>" + "".join(f"<td class='l'>{esc(c)}</td>" for c in r) + "</tr>" for r in lines[1:])
        parts.append(f"<p class='note'>Each size starts from its first checkpoint whose validation perplexity is at most "
                     f"{target:.2f} (the worst size's final); test accuracy with its 95 % Wilson interval.</p>"
                     if target else "")
        parts.append(f"<div class='scroll'><table id='table2-table'><thead><tr>{head}</tr></thead>"
                     f"<tbody>{body}</tbody></table></div>")
    if study.table2_note:
        parts.append(f"<p class='note'>{'Not shown: ' if not study.table2 else ''}{esc(study.table2_note)}</p>")
    return "\n".join(parts)


def sections_markdown(study: Study, images: dict[str, str]) -> str:
    out = []
    if "flops-plot" in images:
        out.append(f"## Validation loss vs FLOPs (Figure 10)\n\n![FLOPs]({images['flops-plot']})\n")
    out.append("## Compressibility vs convergence (Figure 8)\n")
    out.append(f"![Figure 8]({images['fig8-plot']})\n" if "fig8-plot" in images else f"Not shown: {study.fig8_note}\n")
    out.append("## Finetuning at matched pretraining perplexity (Table 2)\n")
    if study.table2:
        lines = table2_lines(study.table2)
        out += ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0]),
                *["| " + " | ".join(r) + " |" for r in lines[1:]], ""]
    if study.table2_note:
        out.append(("Not shown: " if not study.table2 else "") + f"{study.table2_note}\n")
    return "\n".join(out)
