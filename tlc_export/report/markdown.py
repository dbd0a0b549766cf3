"""summary.md: the same answers as index.html, as Markdown with the PNGs beside it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tlc_export.report.html import fmt


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    if not rows:
        return "_(no data in this run)_\n"
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = [fmt(r.get(k), kind).replace("|", "\\|") for k, _, kind in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(ctx: dict[str, Any], images: dict[str, str]) -> str:
    from tlc_export.report.html import BENCH_COLUMNS, VARIANT_COLUMNS

    out = [f"# Train Large, Then Compress — {ctx['name']}\n", ctx.get("claims_md", ""), "## Verdict\n", ctx["verdict"].sentence + "\n",
           f"_{ctx['definition']}_\n"]
    for title, key in (("Accuracy vs storage", "frontier-plot"), ("Accuracy vs latency", "latency-plot"),
                       ("Pretraining curves", "pretrain-plot"), ("Compression error", "error-plot")):
        if key in images:
            out.append(f"## {title}\n\n![{title}]({images[key]})\n")
        if key == "pretrain-plot":
            summary, warnings = ctx.get("epoch_notes") or (None, [])
            if key not in images and (summary or warnings):
                out.append(f"## {title}\n")
            out += [f"{summary}\n"] if summary else []
            out += [f"> **Warning:** {w}\n" for w in warnings]
    out.append(ctx.get("ablation_md", ""))
    out.append("## Best variant per storage budget\n")
    out.append(md_table(ctx["storage_answers"], [("budget_mb", "budget MB", ""), ("variant", "variant", "l"),
               ("compression", "compression", "l"), ("storage_mb", "storage MB", ""),
               ("dev_accuracy", "dev acc %", "pct"), ("test_accuracy", "test acc %", "pct")]))
    out.append(f"## Best (variant, backend) per p50 latency budget (batch {ctx.get('latency_batch')})\n")
    out.append(md_table(ctx["latency_answers"], [("budget_ms", "budget ms", ""), ("variant", "variant", "l"),
               ("format", "format", "l"), ("backend", "backend", "l"), ("dtype", "dtype", "l"),
               ("latency_ms_p50", "p50 ms", ""), ("accuracy", "accuracy %", "pct")]))
    out.append("## Variants\n")
    out.append(md_table(ctx["variants"], VARIANT_COLUMNS))
    out.append("## All benchmark results\n")
    out.append(md_table(ctx["bench"], [c for c in BENCH_COLUMNS if c[0] != "reason"]))
    return "\n".join(out)
