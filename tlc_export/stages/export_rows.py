"""What every family's export stage does the same way with its results under `tlc export --formats`."""

from __future__ import annotations

import json
from typing import Any

from tlc_export.stages.base import StageContext


def kept_rows(ctx: StageContext, formats: list[str]) -> list[dict[str, Any]]:
    """With `--formats` (ctx.options): the last results' rows of every other format whose file is still there."""
    if not ctx.options.get("formats"):
        return []
    prev = ctx.out_dir / "results.json"
    rows = json.loads(prev.read_text()) if prev.is_file() else []
    return [r for r in rows if r.get("format") not in formats
            and (r.get("path") is None or (ctx.run_dir.root / r["path"]).exists())]
