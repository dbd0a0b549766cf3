"""Print the `{stage: cache_key}` map of every recipe under recipes/ as JSON (sweeps: one map per point).

Nothing runs: each recipe is loaded and validated, and the runner's own key computation
(`tlc_export.runner.cache_keys`) gives every enabled stage's key. Existing run directories stay valid
only while these maps stay the same; `tests/unit/test_cache_keys.py` pins them.

usage: python scripts/cache_keys.py [RECIPES_DIR] > keys.json
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any


def recipe_keys(recipes_dir: Path) -> dict[str, Any]:
    """{relative recipe path: {stage: key}} or, for a sweep, {path: {point id: {stage: key}}}.

    The recipes are read from a scratch copy with the tiny synthetic data written beside them (validation
    checks that local files exist; the keys hold the paths as written, not the files).
    """
    from tlc_export.runner import cache_keys
    from tlc_export.sweep.plan import Sweep, load_plan

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny_data import write_tiny_data

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "recipes"
        shutil.copytree(recipes_dir, copy, ignore=shutil.ignore_patterns("data"))
        write_tiny_data(copy / "tiny" / "data")
        for path in sorted(copy.rglob("*.yaml")):
            plan = load_plan(path)
            name = path.relative_to(copy).as_posix()
            if isinstance(plan, Sweep):
                out[name] = {p.id: cache_keys(p.recipe) for p in plan.points}
            else:
                out[name] = cache_keys(plan)
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "recipes"
    json.dump(recipe_keys(root), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
