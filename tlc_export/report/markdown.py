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
    from tlc_export.report.html import (
        BENCH_COLUMNS,
        FINETUNE_COLUMNS,
        VARIANT_COLUMNS,
        latency_answer_columns,
        majority_note,
        not_learned_lines,
        preference_note,
        rank1_note,
        splits_text,
        storage_answer_columns,
    )

    sel, rep = ctx["select_split"], ctx["report_split"]
    out = [f"# Train Large, Then Compress — {ctx['name']}\n", ctx.get("claims_md", ""), "## Verdict\n", ctx["verdict"].sentence + "\n",
           f"_{ctx['definition']}_\n"]
    out += [f"> **{line}**\n" for line in not_learned_lines(ctx)]
    out.append(splits_text(ctx) + "\n")
    for title, key in ((f"Accuracy vs storage ({rep})", "frontier-plot"), (f"Accuracy vs latency ({rep})", "latency-plot"),
                       ("Pretraining curves", "pretrain-plot"), ("Compression error", "error-plot")):
        if key in images:
            out.append(f"## {title}\n\n![{title}]({images[key]})\n")
        if key == "pretrain-plot":
            summary, warnings = ctx.get("epoch_notes") or (None, [])
            if key not in images and (summary or warnings):
                out.append(f"## {title}\n")
            out += [f"{summary}\n"] if summary else []
            out += [f"> **Warning:** {w}\n" for w in warnings]
    out.append(ctx.get("plan_md", ""))  # a run made from a `tlc plan`
    out.append(ctx.get("ablation_md", ""))
    out.append("## Best variant per storage budget\n")
    out.append(f"_Chosen on {sel}, reported on {rep}; ≈ marks a choice the {rep} split cannot tell from its runner-up. "
               f"{preference_note(ctx)}_\n")
    out.append(md_table(ctx["storage_answers"], storage_answer_columns(sel, rep)))
    out.append(majority_note(ctx) + "\n")
    out.append(f"## Best (variant, backend) per p50 latency budget (batch {ctx.get('latency_batch')})\n")
    out.append(f"_{preference_note(ctx)}_\n")
    out.append(md_table(ctx["latency_answers"], latency_answer_columns(sel, rep)))
    out.append(majority_note(ctx) + "\n")
    out += [rank1_note(ctx) + "\n"] if ctx.get("rank1") else []
    out.append("## Finetuning: learning rate and seed chosen on dev\n")
    out.append(md_table(ctx.get("finetune") or [], FINETUNE_COLUMNS))
    out.append("## Variants\n")
    out.append(md_table(ctx["variants"], VARIANT_COLUMNS))
    out.append("## All benchmark results\n")
    out.append(md_table(ctx["bench"], [c for c in BENCH_COLUMNS if c[0] != "reason"]))
    return "\n".join(out)
