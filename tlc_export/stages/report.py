"""What every family's report stage shares."""

from __future__ import annotations

from tlc_export.stages.base import StageContext


def screenshot_report(ctx: StageContext) -> dict[str, str]:
    """`report.screenshot`: index.html rendered to screenshot.png with headless Chromium ({} without it)."""
    from tlc_export.report.screenshot import find_chromium, screenshot

    if find_chromium() is None:
        ctx.console.print("[yellow]report.screenshot: Chromium not installed, skipped (apt-get install -y chromium)[/yellow]")
        return {}
    screenshot(ctx.out_dir / "index.html", ctx.out_dir / "screenshot.png")
    return {"screenshot": "report/screenshot.png"}
