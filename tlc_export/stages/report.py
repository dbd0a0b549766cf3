"""The `report` stage of every family: the family writes report/index.html (self-contained) and
report/summary.md from the run directory (`TaskFamily.write_report`); the stage adds the screenshot. A run made
from a `tlc plan` (its manifest names the plan) keys the report on the plan file's digest as well."""

from __future__ import annotations

from typing import Any

from tlc_export.rundir import RunDir
from tlc_export.stages.base import Stage, StageContext


class ReportStage(Stage):
    name = "report"
    sections = ("report",)
    inputs = ("bench",)

    def keyed_facts(self, run_dir: RunDir) -> dict[str, Any]:
        """A run made from a `tlc plan` shows the plan's predictions against it: the plan file's digest is part of
        the key, so an edited plan re-runs the report. A run not made from a plan keeps its key."""
        digest = run_dir.plan_digest()
        return {"plan_sha256": digest} if digest is not None else {}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        assert ctx.family is not None, "the runner gives every stage its family"
        out = ctx.family.write_report(ctx.run_dir.root, ctx.out_dir, ctx.recipe)
        if ctx.recipe.report.screenshot:
            out.update(screenshot_report(ctx))
        verdict = out.get("verdict")
        ctx.console.print(f"report: {ctx.out_dir / 'index.html'}" + (f"\n{verdict}" if verdict else ""))
        return out


def screenshot_report(ctx: StageContext) -> dict[str, str]:
    """`report.screenshot`: index.html rendered to screenshot.png with headless Chromium ({} without it)."""
    from tlc_export.report.screenshot import find_chromium, screenshot

    if find_chromium() is None:
        ctx.console.print("[yellow]report.screenshot: Chromium not installed, skipped (apt-get install -y chromium)[/yellow]")
        return {}
    screenshot(ctx.out_dir / "index.html", ctx.out_dir / "screenshot.png")
    return {"screenshot": "report/screenshot.png"}
