"""`report` stage of the translation family: report/index.html (self-contained) and report/summary.md from
translation/, compress/, export/ and bench/ results (`tlc_export.tasks.translation.report`)."""

from __future__ import annotations

from typing import Any

from tlc_export.errors import StageError
from tlc_export.stages.base import Stage, StageContext
from tlc_export.stages.report import screenshot_report


class TranslationReportStage(Stage):
    name = "report"
    sections = ("report",)
    inputs = ("bench",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from tlc_export.tasks.translation.report import (
            build_translation_report,
            load_translation_report_data,
        )

        cfg = ctx.recipe.report
        data = load_translation_report_data(ctx.run_dir.root, name=ctx.recipe.name)
        if not data.models and not data.variants:
            raise StageError(
                f"{ctx.run_dir.root}: neither translation/results.json nor compress/results.json has rows; "
                "run the translation and compress stages first"
            )
        out = build_translation_report(data, ctx.out_dir, cfg.storage_budgets_mb)
        if cfg.screenshot:
            out.update(screenshot_report(ctx))
        ctx.console.print(f"report: {ctx.out_dir / 'index.html'}\n{out['verdict']}")
        return out
