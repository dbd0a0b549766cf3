"""The final report: index.html (self-contained) and summary.md from a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlc_export import atomic
from tlc_export.report.answers import (
    Verdict,
    latency_answers,
    storage_answers,
    train_large_verdict,
    usable_variants,
)
from tlc_export.report.checkpoints import (
    checkpoint_study,
    fig8_png,
    sections_html,
    sections_markdown,
)
from tlc_export.report.claims import build_card, card_html, card_markdown, write_card
from tlc_export.report.curve_plots import flops_curve_png
from tlc_export.report.data import ReportData, compression_label, epoch_notes, load_report_data
from tlc_export.report.html import render_html
from tlc_export.report.markdown import render_markdown
from tlc_export.report.pareto import pareto_frontier
from tlc_export.report.plots import accuracy_latency_png, accuracy_storage_png, pretrain_curves_png

__all__ = ["ReportData", "Verdict", "build_report", "load_report_data", "pareto_frontier", "train_large_verdict"]

_PNG_FILES = {"frontier-plot": "accuracy_vs_storage.png", "latency-plot": "accuracy_vs_latency.png",
              "pretrain-plot": "pretrain_curves.png", "error-plot": "compression_error.png",
              "flops-plot": "loss_vs_flops.png", "fig8-plot": "fig8_checkpoints.png"}


def build_report(
    data: ReportData,
    out_dir: str | Path,
    storage_budgets_mb: list[float] | None = None,
    latency_budgets_ms: list[float] | None = None,
) -> dict[str, Any]:
    """Write index.html, summary.md, claims.json and the PNGs into out_dir; return a small summary."""
    out = Path(out_dir)
    variants = [dict(r) for r in data.variants]
    front = {id(r) for r in pareto_frontier(usable_variants(variants), x=lambda r: r["storage_bytes"],
                                             y=lambda r: float(r["dev_accuracy"]))}
    for r in variants:
        r["compression"] = compression_label(r)
        r["on_frontier"] = "yes" if id(r) in front else ""
    verdict = train_large_verdict(variants)
    card = build_card(data, verdict)
    batch, lat = latency_answers(data.bench, latency_budgets_ms)
    figures = {
        "frontier-plot": (accuracy_storage_png(variants), "frontier-plot", "accuracy vs storage with the Pareto frontier"),
        "latency-plot": (accuracy_latency_png(data.bench), "latency-plot", "accuracy vs p50 latency per backend"),
        "pretrain-plot": (pretrain_curves_png(data.curves), "pretrain-plot", "validation perplexity vs wall-clock and steps"),
        "error-plot": (data.error_png, "error-plot", "compression error analysis"),
    }
    study = checkpoint_study(data.run_dir)
    flops_png = flops_curve_png(data.curves)
    fig8 = fig8_png({"this run": study.fig8}) if study.fig8 and not study.fig8_note else None
    figures["flops-plot"] = (flops_png, "flops-plot", "validation loss vs model FLOPs")
    figures["fig8-plot"] = (fig8, "fig8-plot", "accuracy drop at 4 bits vs pretraining checkpoint")
    ctx = {
        "name": data.name, "verdict": verdict, "definition": " ".join((Verdict.__doc__ or "").split()),
        "figures": figures, "storage_answers": storage_answers(variants, storage_budgets_mb),
        "latency_batch": batch, "latency_answers": lat, "variants": variants, "bench": data.bench,
        "environment": data.environment, "epoch_notes": epoch_notes(data.pretrain),
        "claims_html": card_html(card), "claims_md": card_markdown(card),
    }
    images = {}
    for key, (png, _, _) in figures.items():
        if png:
            atomic.write_bytes(out / _PNG_FILES[key], png)
            images[key] = _PNG_FILES[key]
    write_card(card, out)
    ctx["ablation_html"] = sections_html(study, flops_png, fig8)
    ctx["ablation_md"] = sections_markdown(study, images)
    atomic.write_text(out / "index.html", render_html(ctx))
    atomic.write_text(out / "summary.md", render_markdown(ctx, images))
    return {
        "index": "report/index.html", "summary": "report/summary.md",
        "train_large_won": verdict.won if verdict.decided else None,
        "frontier": [r["variant"] for r in variants if r["on_frontier"]],
        "claims": "report/claims.json",
        "claims_status": {str(c.number): c.status for c in card.claims},
    }
