"""The final report: index.html (self-contained) and summary.md from a run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlc_export import atomic, stats
from tlc_export.report.answers import (
    NONINFERIORITY_MARGIN,
    Verdict,
    latency_answers,
    own_uncompressed,
    paired,
    storage_answers,
    train_large_verdict,
    training_effect_text,
    training_effects,
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
from tlc_export.report.plan_check import (
    plan_check_summary,
    plan_section_html,
    plan_section_markdown,
)
from tlc_export.report.plots import accuracy_latency_png, accuracy_storage_png, pretrain_curves_png
from tlc_export.scoring import REPORT_SPLIT, SELECTION_SPLIT

__all__ = ["AnswerTables", "ReportData", "Verdict", "answer_tables", "build_report", "load_report_data", "pareto_frontier",
           "train_large_verdict"]

_PNG_FILES = {"frontier-plot": "accuracy_vs_storage.png", "latency-plot": "accuracy_vs_latency.png",
              "pretrain-plot": "pretrain_curves.png", "error-plot": "compression_error.png",
              "flops-plot": "loss_vs_flops.png", "fig8-plot": "fig8_checkpoints.png"}


def _with_intervals(rows: list[dict[str, Any]], data: ReportData, split: str) -> list[dict[str, Any]]:
    """Bench rows with `<split>_accuracy_ci`: from their predictions when stored, else from the
    accuracy and the split's size (Wilson, same formula)."""
    n = (data.majority.get(split) or {}).get("n")
    out = []
    for r in rows:
        r = dict(r)
        acc = r.get(f"{split}_accuracy")
        if acc is not None and not r.get(f"{split}_accuracy_ci"):
            sp = data.predictions.get(r.get("predictions") or "", {}).get(split)
            if sp is not None:
                a = stats.accuracy_interval(sp.correct)
                r[f"{split}_accuracy_ci"] = [a.ci_low, a.ci_high]
            elif n:
                r[f"{split}_accuracy_ci"] = list(stats.wilson_interval(min(n, max(0, round(float(acc) * n))), n))
        out.append(r)
    return out


def _finetune_rows(data: ReportData) -> list[dict[str, Any]]:
    rows = []
    for r in data.finetune:
        r = dict(r)
        cands = r.get("candidates") or []
        r["candidates_text"] = "; ".join(f"lr {c['lr']:g} seed {c['seed']}: {100 * c['dev_accuracy']:.1f} %" for c in cands)
        r["learned"] = None if r.get("learned_task") is None else ("yes" if r["learned_task"] else "NO: did not learn the task")
        r["converged_text"] = None if r.get("converged") is None else (
            f"yes ({r.get('evals_since_best')} evals without a new best)" if r["converged"]
            else "NO: dev accuracy still improving at the end")
        rows.append(r)
    return rows


@dataclass
class AnswerTables:
    """The report's two answers: the variant to deploy per storage budget, and per latency budget."""

    storage: list[dict[str, Any]]
    latency_batch: int | None
    latency: list[dict[str, Any]]


def answer_tables(
    data: ReportData,
    storage_budgets_mb: list[float] | None = None,
    latency_budgets_ms: list[float] | None = None,
    *,
    backend: str | None = None,
    batch: int | None = None,
    margin: float = NONINFERIORITY_MARGIN,
) -> AnswerTables:
    """The answer tables of `data`, exactly as the report shows them; `tlc package --max-storage-mb /
    --max-latency-ms` calls this with its one budget and the run's margin, so the variant it ships is the
    one the report names.

    `backend` / `batch` restrict the latency answer to that backend's rows / that batch size (the
    report itself uses every backend at the smallest timed batch). `margin` (accuracy, 0.01 = 1 point):
    a cheaper row shown on dev to lose at most this much is preferred (`answers.prefer_cheaper`).
    """
    bench = [r for r in _with_intervals(data.bench, data, REPORT_SPLIT) if (backend is None or r.get("backend") == backend)
             and (batch is None or r.get("batch") == batch)]
    lat_batch, lat = latency_answers(bench, latency_budgets_ms, data.predictions, margin=margin)
    storage = storage_answers([{**r, "compression": compression_label(r)} for r in data.variants], storage_budgets_mb,
                              data.predictions, margin=margin)
    return AnswerTables(storage, lat_batch, lat)


def _rank1(exports: list[dict[str, Any]]) -> dict[str, int] | None:
    """How many own-code files carry rank-1 features (`integer_kernels.corrections`), and how many in all."""
    terms = [int((r.get("integer_kernels") or {}).get("corrections") or 0) for r in exports if r.get("status", "ok") == "ok"]
    carrying = [t for t in terms if t > 0]
    return {"files": len(carrying), "terms": sum(carrying)} if carrying else None


def build_report(
    data: ReportData,
    out_dir: str | Path,
    storage_budgets_mb: list[float] | None = None,
    latency_budgets_ms: list[float] | None = None,
    margin: float = NONINFERIORITY_MARGIN,
    plan_check: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write index.html, summary.md, claims.json and the PNGs into out_dir; return a small summary.

    `plan_check` (a run made from a `tlc plan`: {plan, plan_sha256, comparison, note}, the family's
    `plan_comparison`) adds the plan's predictions against this run, worded as `tlc plan --check`, and
    plan_check.json.

    Dev selects, test reports (`tlc_export.scoring`): the Pareto frontier is chosen on dev (a frontier
    drawn on test would pick the luckiest test scores); the verdict, the answer tables and the plots'
    y-axis are on the test split, with 95 % intervals and dev shown beside.
    """
    split = REPORT_SPLIT
    out = Path(out_dir)
    variants = [dict(r) for r in data.variants]
    front = {id(r) for r in pareto_frontier(usable_variants(variants), x=lambda r: r["storage_bytes"],
                                             y=lambda r: float(r[f"{SELECTION_SPLIT}_accuracy"]))}
    effects = training_effects(variants, lambda a, b, s: paired(a, b, data.predictions, s), split)
    effect_lines = []
    for r in variants:
        r["compression"] = compression_label(r)
        r["on_frontier"] = "yes" if id(r) in front else ""
        if r.get("learned_task") is not None:
            r["above_majority"] = "yes" if r["learned_task"] else "NO"
        c = effects.get(str(r.get("variant")))
        if c is not None:
            r["training_effect"] = f"beats its uncompressed model ({100 * c.diff:+.1f}, p = {c.p_value:.2g})"
            effect_lines.append(training_effect_text(r, own_uncompressed(r, variants) or {}, c, split) + ".")
    bench = _with_intervals(data.bench, data, split)
    majority = data.majority.get(split)
    if majority is not None and data.label_names and majority.get("label") is not None:
        majority = {**majority, "label_name": data.label_names[int(majority["label"])]}
    verdict = train_large_verdict(variants, data.predictions)
    finetune = _finetune_rows(data)
    card = build_card(data, verdict)
    answers = answer_tables(data, storage_budgets_mb, latency_budgets_ms, margin=margin)
    batch, lat = answers.latency_batch, answers.latency
    figures = {
        "frontier-plot": (accuracy_storage_png(variants, split, majority, frontier_split=SELECTION_SPLIT), "frontier-plot",
                          f"{split} accuracy vs storage with 95 % intervals, the Pareto frontier (chosen on "
                          f"{SELECTION_SPLIT}) and the majority line"),
        "latency-plot": (accuracy_latency_png(bench, split, majority), "latency-plot",
                         f"{split} accuracy vs p50 latency per backend with 95 % intervals and the majority line"),
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
        "figures": figures, "storage_answers": answers.storage,
        "latency_batch": batch, "latency_answers": lat, "variants": variants, "bench": bench,
        "environment": data.environment, "finetune": finetune, "majority": majority,
        "select_split": SELECTION_SPLIT, "report_split": split, "margin": margin,
        "not_learned": [r for r in finetune if r.get("learned_task") is False],
        "rank1": _rank1(data.exports),
        "training_effects": effect_lines,
        "not_converged": [r for r in finetune if r.get("converged") is False],
        "task_overlap": data.task_overlap,
        "epoch_notes": epoch_notes(data.pretrain),
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
    if plan_check is not None:
        ctx["plan_html"] = plan_section_html(plan_check)
        ctx["plan_md"] = plan_section_markdown(plan_check)
        atomic.write_json(out / "plan_check.json", plan_check)
    atomic.write_text(out / "index.html", render_html(ctx))
    atomic.write_text(out / "summary.md", render_markdown(ctx, images))
    return {
        "index": "report/index.html", "summary": "report/summary.md",
        "report_split": split,
        "train_large_won": verdict.won if verdict.decided else None,
        "verdict_outcome": verdict.outcome,
        "frontier": [r["variant"] for r in variants if r["on_frontier"]],
        "frontier_split": SELECTION_SPLIT,
        "training_effects": sorted(effects),
        "did_not_learn": [r["model"] for r in ctx["not_learned"]],
        "not_converged": [r["model"] for r in ctx["not_converged"]],
        "claims": "report/claims.json",
        "claims_status": {str(c.number): c.status for c in card.claims},
        **({"plan_check": plan_check_summary(plan_check)} if plan_check is not None else {}),
    }
