"""The translation family's report: index.html (self-contained) and summary.md from a run directory.

It reuses the classification report's pieces with the family's metric (`metrics.METRIC`,
BLEU): the Pareto frontier (`report.pareto`), the storage answers (`report.answers.storage_answers`),
the verdict's choice of reference and witness (`report.answers.verdict_pair`), the BLEU-vs-storage plot
(`report.plots.accuracy_storage_png`) and the HTML table/figure helpers. What differs is the paired
test: two models' translations of the same test sentences, by a paired bootstrap over sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlc_export import atomic
from tlc_export.report.answers import storage_answers, training_effects, usable_variants
from tlc_export.report.data import compression_label
from tlc_export.report.pareto import pareto_frontier
from tlc_export.report.plots import accuracy_storage_png
from tlc_export.scoring import REPORT_SPLIT, SELECTION_SPLIT
from tlc_export.tasks.translation.metrics import METRIC as FAMILY_METRIC
from tlc_export.tasks.translation.report.data import (
    FIGURE5_FILES,
    TranslationReportData,
    load_translation_report_data,
)
from tlc_export.tasks.translation.report.render import render_html, render_markdown
from tlc_export.tasks.translation.report.tables import (
    batch_sizes,
    file_columns,
    file_rows,
    learned,
    variant_rows,
)
from tlc_export.tasks.translation.report.verdict import (
    DEFINITION,
    METRIC,
    SentenceComparator,
    size_comparisons,
    translation_verdict,
)

__all__ = ["TranslationReportData", "build_translation_report", "deploy_answers", "dev_frontier",
           "load_translation_report_data"]

_PNG_FILES = {"storage-plot": "bleu_vs_storage.png", **{k: f"{v}" for k, v in FIGURE5_FILES.items()}}


def dev_frontier(variants: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Pareto frontier of (storage, BLEU) chosen on dev: variants no other has both less storage and more dev BLEU.
    Test BLEU plays no part (it only reports the chosen ones)."""
    pts = usable_variants(variants, SELECTION_SPLIT, REPORT_SPLIT, metric=METRIC)
    return pareto_frontier(pts, x=lambda r: float(r["storage_bytes"]), y=lambda r: float(r[f"{SELECTION_SPLIT}_{METRIC}"]))


def deploy_answers(data: TranslationReportData, storage_budgets_mb: Sequence[float] | None,
                   compare: SentenceComparator | None = None) -> list[dict[str, Any]]:
    """The variant to deploy per storage budget, exactly as the report's table names it (`tlc package
    --max-storage-mb` for a translation run should call this with its one budget): chosen on dev BLEU among
    the compress variants that fit, reported with test BLEU and its interval, and compared with dev's
    second choice on the same test sentences (`vs_runner_up`, `mark`)."""
    answers = storage_answers([{**r, "compression": compression_label(r)} for r in data.variants], storage_budgets_mb,
                              metric=METRIC, compare=compare or SentenceComparator(data))
    by_name = {str(r["variant"]): r for r in data.variants}
    for a in answers:  # dev picked it: its dev interval is shown too
        a[f"{SELECTION_SPLIT}_{METRIC}_ci"] = by_name.get(str(a.get("variant")), {}).get(f"{SELECTION_SPLIT}_{METRIC}_ci")
    return answers


def build_translation_report(data: TranslationReportData, out_dir: str | Path,
                             storage_budgets_mb: list[float] | None = None) -> dict[str, Any]:
    """Write index.html, summary.md and the PNGs into out_dir; return a small summary for the manifest."""
    out = Path(out_dir)
    compare = SentenceComparator(data)
    front = dev_frontier(data.variants)
    front_names = {str(r["variant"]) for r in front}
    variants = variant_rows(data.variants, front_names)
    effects = training_effects(data.variants, compare, REPORT_SPLIT)
    for r in variants:
        c = effects.get(str(r.get("variant")))
        if c is not None:
            r["training_effect"] = f"beats its uncompressed model ({c.diff:+.2f} BLEU, p = {c.p_value:.2g})"
    verdict = translation_verdict(data.variants, compare)
    answers = deploy_answers(data, storage_budgets_mb, compare)
    sizes = size_comparisons(data.variants, storage_budgets_mb, compare)
    figures: dict[str, bytes | None] = {
        "storage-plot": accuracy_storage_png(data.variants, REPORT_SPLIT, None, metric=FAMILY_METRIC,
                                             frontier_split=SELECTION_SPLIT),
        **{k: data.figures.get(k) for k in FIGURE5_FILES},
    }
    images = {}
    for key, png in figures.items():
        if png:
            atomic.write_bytes(out / _PNG_FILES[key], png)
            images[key] = _PNG_FILES[key]
    files = file_rows(data.exports, data.bench)
    threads = sorted({str(r["threads"]) for r in data.bench if r.get("threads") is not None})
    first = data.models[0] if data.models else (data.variants[0] if data.variants else {})
    ctx = {
        "name": data.name, "verdict": verdict, "definition": DEFINITION, "training": data.training,
        "interval_method": first.get("interval_method"), "bleu_signature": first.get("bleu_signature"),
        "figures": figures, "storage_answers": answers, "size_comparisons": sizes,
        "models": [{**m, "learned": learned(m)} for m in data.models],
        "variants": variants, "files": files, "file_columns": file_columns(batch_sizes(data.bench)),
        "bench": data.bench, "environment": data.environment,
        "bench_note": (f"Timed with {', '.join(threads)} thread(s); latencies are per sentence." if threads else ""),
    }
    atomic.write_text(out / "index.html", render_html(ctx))
    atomic.write_text(out / "summary.md", render_markdown(ctx, images))
    return {
        "index": "report/index.html", "summary": "report/summary.md", "report_split": REPORT_SPLIT,
        "metric": METRIC, "train_large_won": verdict.won if verdict.decided else None,
        "verdict_outcome": verdict.outcome, "verdict": verdict.sentence,
        "frontier": [str(r["variant"]) for r in front], "frontier_split": SELECTION_SPLIT,
        "training_effects": sorted(effects),
        "storage_answers": [{k: a.get(k) for k in ("budget_mb", "variant", "test_bleu", "test_bleu_ci", "vs_runner_up")}
                            for a in answers],
    }
