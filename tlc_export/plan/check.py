"""`tlc plan --check RUN_DIR --plan plan.json`: every prediction of a plan against a finished run.

- final loss: each size's measured final validation loss (`pretrain/results.json`) against the plan's
  prediction: error, and whether it fell inside the stated interval;
- ranking: Spearman's rank correlation of predicted and measured final losses across sizes;
- recommendation: the measured compressed loss of every (size, compression) that met the plan's limits
  (the final checkpoint's loss plus the penalty measured on the final checkpoint itself), and whether the
  plan's recommendation is the best of them;
- the Figure 8 assumption: the penalty measured on the final checkpoint minus the pilot's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tlc_export.plan.choose import MB, PlanError


def spearman(a: list[float], b: list[float]) -> float | None:
    """Rank correlation (average ranks for ties); None for fewer than 2 sizes or a constant side."""
    if len(a) < 2:
        return None

    def ranks(v: list[float]) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for x in np.unique(v):
            r[v == x] = r[v == x].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def final_penalties(run_dir: Path, recipe: Any, size: str) -> dict[str, dict[str, float]]:
    """The same compression probe as the plan's, on the run's final pretraining checkpoint."""
    from transformers import AutoModelForMaskedLM

    from tlc_export.plan.probe import compression_penalties
    from tlc_export.pretrain.evaluate import fixed_val_batches
    from tlc_export.tasks.classification.stages.pretrain import load_pretrain_data

    data = load_pretrain_data(run_dir / "data", recipe.data.max_seq_len, recipe.data.mlm_probability, recipe.data.fraction)
    sample = data.validation_sample(recipe.pretrain)
    val = fixed_val_batches(data.val_rows, sample.indices, sample.batch_size, data.mask_spec(), recipe.pretrain.seed)
    model = AutoModelForMaskedLM.from_pretrained(str(run_dir / "pretrain" / size / "checkpoint")).eval()
    return compression_penalties(model, recipe.compress, val)


def check_plan(plan: dict[str, Any], run_dir: Path, recipe: Any | None = None,
               penalties: dict[str, dict[str, dict[str, float]]] | None = None) -> dict[str, Any]:
    """Compare; `penalties` ({size: probe result}) is measured from the run's checkpoints when not given."""
    results = run_dir / "pretrain" / "results.json"
    if not results.exists():
        raise PlanError(f"{results}: missing; RUN_DIR must be a finished run of the planned recipe (`tlc run` it first)")
    pre = json.loads(results.read_text())
    if abs(float(pre["time_budget_s"]) - float(plan["budget_s"])) > 1e-9:
        raise PlanError(f"{results}: the run's budget is {pre['time_budget_s']:g} s, the plan's {plan['budget_s']:g} s; "
                        "check a run made with the same budget (the plan's recipe.plan.yaml)")
    measured = {r["model"]: r for r in pre["models"]}
    rows = []
    for s in plan["sizes"]:
        m = measured.get(s["size"])
        if m is None or m.get("final_val_loss") is None:
            continue
        lo, hi = s["interval"]
        got = float(m["final_val_loss"])
        rows.append({"size": s["size"], "predicted": s["predicted_final_loss"], "interval": [lo, hi],
                     "measured": got, "error": s["predicted_final_loss"] - got, "inside": lo <= got <= hi,
                     "trustworthy": s["trustworthy"]})
    if not rows:
        raise PlanError(f"{results}: none of the plan's sizes ({', '.join(s['size'] for s in plan['sizes'])}) finished "
                        "in this run")
    fitted = [r for r in rows if np.isfinite(r["predicted"])]  # a size whose pilot gave no fit has no prediction
    out: dict[str, Any] = {
        "run_dir": str(run_dir), "sizes": rows, "level": plan["level"],
        "inside": sum(r["inside"] for r in rows), "of": len(rows), "predicted": len(fitted),
        "mean_abs_error": float(np.mean([abs(r["error"]) for r in fitted])) if fitted else None,
        "rank_correlation": spearman([r["predicted"] for r in fitted], [r["measured"] for r in fitted]),
        "best_measured_size": min(rows, key=lambda r: r["measured"])["size"],
        "best_predicted_size": min(fitted, key=lambda r: r["predicted"])["size"] if fitted else None,
    }
    if penalties is None and recipe is not None:
        penalties = {r["size"]: final_penalties(run_dir, recipe, r["size"]) for r in rows}
    if penalties:
        lim = plan["limits"]
        by_size = {s["size"]: s for s in plan["sizes"]}
        pen_rows, cands = [], []
        for r in rows:
            s = by_size[r["size"]]
            lat = s["latency_ms"][str(lim["latency_batch"])]["p50_ms"]
            for key, c in s["compression"].items():
                final = penalties[r["size"]][key]
                pen_rows.append({"variant": f"{r['size']}.{key}", "pilot_penalty": c["penalty"],
                                 "final_penalty": final["penalty"], "error": c["penalty"] - final["penalty"]})
                fits = ((lim["max_storage_mb"] is None or c["storage_bytes"] <= lim["max_storage_mb"] * MB)
                        and (lim["max_latency_ms"] is None or lat <= lim["max_latency_ms"]))
                if fits:
                    cands.append((r["measured"] + final["penalty"], f"{r['size']}.{key}"))
        best = min(cands)[1] if cands else None
        recd = plan["recommendation"]["best"]["variant"]
        out.update(penalty=pen_rows, penalty_mean_abs_error=float(np.mean([abs(p["error"]) for p in pen_rows])),
                   best_fitting_measured=best, recommended=recd, recommendation_was_best=best == recd,
                   recommended_size_was_best=best is not None and best.split(".")[0] == recd.split(".")[0])
    return out
