"""The translation report as index.html (self-contained: PNGs as data URIs) and summary.md (PNGs beside it).

Both are rendered from one context dict (`build_translation_report` makes it), section by section, so
they always say the same thing.
"""

from __future__ import annotations

from typing import Any

from tlc_export.report.html import CSS, JS, esc, img, table, verdict_class
from tlc_export.report.markdown import md_table
from tlc_export.tasks.translation.report.tables import (
    ANSWER_COLUMNS,
    BENCH_COLUMNS,
    SIZE_COLUMNS,
    TRAINING_COLUMNS,
    VARIANT_COLUMNS,
)

# (figure key, title) in the order the report shows them
FIGURES = {
    "storage-plot": "BLEU vs storage on test, every variant (sizes × sparsity × bits)",
    "bleu-wallclock": "Dev BLEU vs wall-clock per size, same budget (the paper's Figure 5)",
    "bleu-steps": "Dev BLEU vs optimizer steps per size",
}


def splits_text(ctx: dict[str, Any]) -> str:
    t = ctx.get("training") or {}
    text = ("Dev selects: the witness of the verdict, the Pareto frontier, the variant each budget answer names. "
            "Test reports: every BLEU in the verdict, the tables and the plots, with 95 % intervals "
            f"({ctx.get('interval_method') or 'sacrebleu bootstrap over sentences'}); dev is shown beside it. "
            "Two models are compared on the same test sentences by a paired permutation test with a paired bootstrap "
            "interval (both must agree to decide; not below 20 sentences).")
    if t.get("source_lang"):
        text += f" Task: {t['source_lang']}→{t['target_lang']}"
        if t.get("time_budget_s") is not None:
            text += f", every size trained for the same {float(t['time_budget_s']):g} s of wall-clock"
        text += "."
    if ctx.get("bleu_signature"):
        text += f" BLEU signature: {ctx['bleu_signature']}."
    regime = regime_text(t, ctx.get("models") or [])
    return text + (" " + regime if regime else "")


PAPER_TRAIN_PAIRS = 36_000_000  # WMT14 En→Fr training sentences (paper §2)


def regime_text(training: dict[str, Any], models: list[dict[str, Any]]) -> str:
    """How far this run is from the paper's: training pairs, and how much of them each size saw."""
    pairs = training.get("train_pairs")
    seen = [f"{m['model']} {int(m['steps']):,} steps, {int(m['tokens']):,} tokens ({float(m['epochs']):.2f} epochs)"
            for m in models if m.get("steps") is not None and m.get("tokens") is not None and m.get("epochs") is not None]
    if not pairs or not seen:
        return ""
    return (f"Regime: {int(pairs):,} training pairs, {int(pairs) / PAPER_TRAIN_PAIRS:.2%} of the paper's WMT14 "
            f"En→Fr (36 M pairs, trained to convergence on GPUs); this run saw " + "; ".join(seen)
            + ". BLEU levels here are not comparable to the paper's; compare sizes within the run.")


def _sections(ctx: dict[str, Any]) -> list[tuple[str, str, list[tuple[str, Any, Any, str]]]]:
    """(section id, title, [(kind, payload, columns, note)]) where kind is 'p' (text), 'fig' or 'table'."""
    files = ctx["files"]
    out: list[tuple[str, str, list[tuple[str, Any, Any, str]]]] = [
        ("deploy", "Which variant to deploy, per storage budget", [
            ("p", "Chosen on dev among the variants that fit, reported on test with its 95 % interval; the last column "
                  "compares the choice with dev's second choice on the same test sentences (≈: within noise).", None, ""),
            ("table", ctx["storage_answers"], ANSWER_COLUMNS, "storage-answers")]),
        ("storage", "BLEU vs storage (every variant)", [
            ("fig", "storage-plot", None, ""),
            ("p", "Largest vs smallest size at each storage budget (each chosen on dev, compared on test):", None, ""),
            ("table", ctx["size_comparisons"], SIZE_COLUMNS, "size-comparisons")]),
        ("training", "Training: BLEU per size vs wall-clock (Figure 5)", [
            ("fig", "bleu-wallclock", None, ""), ("fig", "bleu-steps", None, ""),
            ("table", ctx["models"], TRAINING_COLUMNS, "training-table")]),
        ("variants", "Variants (compress stage)", [
            ("p", "Pareto frontier: the variants no other beats on both storage and dev BLEU (chosen on dev, "
                  "test shown).", None, ""),
            ("table", ctx["variants"], VARIANT_COLUMNS, "variants-table")]),
    ]
    if files or ctx["bench"]:
        out.append(("deployment", "Exported files and benchmarks", [
            ("p", "One row per file: its storage, its BLEU decoded through that runtime, and its latency per sentence "
                  f"(p50/p90) and sentences/s at each timed batch size. {ctx.get('bench_note', '')}", None, ""),
            ("table", files, ctx["file_columns"], "files-table"),
            ("p", "Every benchmark row:", None, ""),
            ("table", ctx["bench"], BENCH_COLUMNS, "bench-table")]))
    else:
        out.append(("deployment", "Exported files and benchmarks", [
            ("p", "No export or bench rows in this run (run the export and bench stages to add them).", None, "")]))
    return out


def render_html(ctx: dict[str, Any]) -> str:
    v = ctx["verdict"]
    env = ctx.get("environment") or {}
    env_txt = ", ".join(f"{k}: {env[k]}" for k in ("cpu", "threads", "gpu", "torch", "onnxruntime") if env.get(k))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>tlc translation report — {esc(ctx['name'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Train Large, Then Compress (translation) — {esc(ctx['name'])}</h1>",
        f"<p class='note'>{esc(env_txt)}</p>" if env_txt else "",
        f"<h2>Did train large, then compress win?</h2><p id='verdict' class='verdict {verdict_class(v)}'>{esc(v.sentence)}</p>",
        f"<p class='note'>{esc(ctx['definition'])}</p>",
        f"<p id='splits' class='splits'>{esc(splits_text(ctx))}</p>",
    ]
    for ident, title, items in _sections(ctx):
        parts.append(f"<h2 id='{esc(ident)}'>{esc(title)}</h2>")
        for kind, payload, cols, extra in items:
            if kind == "p":
                parts.append(f"<p class='note'>{esc(payload)}</p>")
            elif kind == "fig":
                png = ctx["figures"].get(payload)
                parts.append(img(png, payload, FIGURES[payload]))
            else:
                parts.append(table(payload, cols, extra, sortable=True, row_attr="variant" if extra != "training-table"
                                   else "model"))
    parts.append(f"<script>{JS}</script></body></html>")
    return "\n".join(parts)


def render_markdown(ctx: dict[str, Any], images: dict[str, str]) -> str:
    v = ctx["verdict"]
    out = [f"# Train Large, Then Compress (translation) — {ctx['name']}\n", "## Verdict\n", v.sentence + "\n",
           f"_{ctx['definition']}_\n", splits_text(ctx) + "\n"]
    for _, title, items in _sections(ctx):
        out.append(f"## {title}\n")
        for kind, payload, cols, _extra in items:
            if kind == "p":
                out.append(payload + "\n")
            elif kind == "fig":
                if payload in images:
                    out.append(f"![{FIGURES[payload]}]({images[payload]})\n")
            else:
                out.append(md_table(payload, cols))
    return "\n".join(out)
