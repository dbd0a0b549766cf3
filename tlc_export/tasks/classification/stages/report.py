"""`report` stage: index.html (self-contained) and summary.md from the whole run directory."""

from __future__ import annotations

from typing import Any

from tlc_export.errors import StageError
from tlc_export.report import build_report, load_report_data
from tlc_export.stages.base import Stage, StageContext
from tlc_export.stages.report import screenshot_report


class ReportStage(Stage):
    name = "report"
    sections = ("report",)
    inputs = ("bench",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        cfg = ctx.recipe.report
        data = load_report_data(ctx.run_dir.root, name=ctx.recipe.name)
        if not data.variants and not data.bench:
            raise StageError(
                f"{ctx.run_dir.root}: neither compress/results.json nor bench/results.jsonl has rows; "
                "run the compress and bench stages first"
            )
        out = build_report(data, ctx.out_dir, cfg.storage_budgets_mb, cfg.latency_budgets_ms)
        if cfg.screenshot:
            out.update(screenshot_report(ctx))
        ctx.console.print(f"report: {ctx.out_dir / 'index.html'}")
        return out
