"""`tlc plan --check RUN_DIR --plan plan.json`: every prediction of a plan against a finished run.

Written once below this package, so the report of a run made from a plan shows the same: the comparison's
arithmetic and wording in `report.plan_check`, the run's side (its results, the penalties measured on its final
checkpoints with the plan's own probe) in `tasks.classification.plan_check`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlc_export.tasks.classification.plan_check import check_run


def check_plan(plan: dict[str, Any], run_dir: Path, recipe: Any | None = None,
               penalties: dict[str, dict[str, dict[str, float]]] | None = None) -> dict[str, Any]:
    """Compare; `penalties` ({size: probe result}) is measured from the run's checkpoints when not given."""
    return check_run(plan, run_dir, recipe, penalties)
