"""A run made from a `tlc plan` against its plan: the run's side of the backtest, for `tlc plan --check` and for
this family's report.

The run directory's manifest names the plan that made it (`RunDir.plan_file`, written by `tlc plan`). The
comparison's arithmetic and wording are `report.plan_check`'s; here the run's final pretraining checkpoints are
probed for their compression penalties (`compress.mlm_penalty`, the probe the plan ran on the pilots) on the
pretrain stage's fixed validation batches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tlc_export.errors import PlanError, TlcError
from tlc_export.report.plan_check import compare_plan, read_plan
from tlc_export.rundir import RunDir


def final_penalties(run_dir: Path, recipe: Any, sizes: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """{size: the same compression probe as the plan's, on the run's final pretraining checkpoint of that size};
    the validation batches are built once for all sizes."""
    from transformers import AutoModelForMaskedLM

    from tlc_export.compress.mlm_penalty import compression_penalties
    from tlc_export.pretrain.evaluate import fixed_val_batches
    from tlc_export.tasks.classification.stages.pretrain import load_pretrain_data

    data = load_pretrain_data(run_dir / "data", recipe.data.max_seq_len, recipe.data.mlm_probability, recipe.data.fraction)
    sample = data.validation_sample(recipe.pretrain)
    val = fixed_val_batches(data.val_rows, sample.indices, sample.batch_size, data.mask_spec(), recipe.pretrain.seed)
    out = {}
    for size in sizes:
        model = AutoModelForMaskedLM.from_pretrained(str(run_dir / "pretrain" / size / "checkpoint")).eval()
        out[size] = compression_penalties(model, recipe.compress, val)
    return out


def check_run(plan: dict[str, Any], run_dir: Path, recipe: Any | None = None,
              penalties: dict[str, dict[str, dict[str, float]]] | None = None) -> dict[str, Any]:
    """The comparison of `plan` with the finished run in `run_dir`; `penalties` ({size: probe result}) is measured
    on the run's final checkpoints when not given and `recipe` is."""
    results = run_dir / "pretrain" / "results.json"
    if not results.exists():
        raise PlanError(f"{results}: missing; RUN_DIR must be a finished run of the planned recipe (`tlc run` it first)")
    pre = json.loads(results.read_text())
    out = compare_plan(plan, pre, penalties, run_dir=str(run_dir), source=str(results))
    if penalties is None and recipe is not None:
        pens = final_penalties(run_dir, recipe, [r["size"] for r in out["sizes"]])
        out = compare_plan(plan, pre, pens, run_dir=str(run_dir), source=str(results))
    return out


def plan_comparison(run_root: Path, recipe: Any) -> dict[str, Any] | None:
    """The report's plan section: None for a run not made from a plan; else {plan, plan_sha256, comparison, note},
    the comparison None and the note saying why when the plan cannot be checked against this run (the plan file
    gone or unreadable, another budget, no planned size finished)."""
    rd = RunDir(run_root)
    path = rd.plan_file()
    if path is None:
        return None
    record: dict[str, Any] = {"plan": str(path), "plan_sha256": rd.plan_digest(), "comparison": None, "note": None}
    try:
        record["comparison"] = check_run(read_plan(path, option="the run's plan (manifest.json `plan`)"), run_root,
                                         recipe)
    except TlcError as exc:
        record["note"] = str(exc)
    return record
