"""A plan's predictions against the run that followed it: the arithmetic and the wording of `tlc plan --check`,
written once for the command (`plan.check`) and for the report of a run made from a plan (the classification
family's `write_report`).

`compare_plan` is pure: the plan (plan.json), the run's pretraining results (`pretrain/results.json`) and the
compression penalties measured on the run's final checkpoints go in, a dict comes out:
- final loss: each size's measured final validation loss against the plan's prediction: error, and whether it
  fell inside the stated interval;
- ranking: Spearman's rank correlation of predicted and measured final losses across sizes;
- recommendation: the measured compressed loss of every (size, compression) that met the plan's limits (the
  final checkpoint's loss plus the penalty measured on that checkpoint), and whether the plan's recommendation
  is the best of them;
- the Figure 8 assumption: the penalty measured on the pilot minus the one measured on the final checkpoint.

`check_tables` gives its tables as plain strings (title, header, rows, caption); rich (the command), Markdown
and HTML (the report) only lay them out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlc_export.errors import PlanError

PLAN_FORMAT = "tlc-plan/1"
MB = 1e6  # storage in decimal megabytes, as `tlc package --max-storage-mb` and the report


def meets_limits(storage_bytes: float, latency_ms: float, max_storage_mb: float | None,
                 max_latency_ms: float | None) -> bool:
    """The plan's limits (≤ is within; None: no limit)."""
    return ((max_storage_mb is None or storage_bytes <= max_storage_mb * MB)
            and (max_latency_ms is None or latency_ms <= max_latency_ms))


def read_plan(path: Path, option: str = "--plan") -> dict[str, Any]:
    """plan.json, or a PlanError naming `option` (where the path came from) and what to pass instead."""
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PlanError(f"{option} {path}: cannot read a plan ({exc}); pass the plan.json `tlc plan` wrote") from exc
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        got = plan.get("format") if isinstance(plan, dict) else type(plan).__name__
        raise PlanError(f"{option} {path}: not a {PLAN_FORMAT} file (format {got!r})")
    return plan


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


def compare_plan(plan: dict[str, Any], pretrain: dict[str, Any],
                 penalties: dict[str, dict[str, dict[str, float]]] | None = None, *, run_dir: str = "",
                 source: str = "pretrain/results.json") -> dict[str, Any]:
    """The comparison (`check.json`'s fields); `penalties` = {size: {"s30.b4": {penalty, ...}}} on the final
    checkpoints, or None to leave the recommendation and the penalty error out. `source` names the results file
    in errors."""
    if abs(float(pretrain["time_budget_s"]) - float(plan["budget_s"])) > 1e-9:
        raise PlanError(f"{source}: the run's budget is {pretrain['time_budget_s']:g} s, the plan's {plan['budget_s']:g} s; "
                        "check a run made with the same budget (the plan's recipe.plan.yaml)")
    measured = {r["model"]: r for r in pretrain["models"]}
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
        raise PlanError(f"{source}: none of the plan's sizes ({', '.join(s['size'] for s in plan['sizes'])}) finished "
                        "in this run")
    fitted = [r for r in rows if math.isfinite(r["predicted"])]  # a size whose pilot gave no fit has no prediction
    out: dict[str, Any] = {
        "run_dir": run_dir, "sizes": rows, "level": plan["level"],
        "inside": sum(r["inside"] for r in rows), "of": len(rows), "predicted": len(fitted),
        "mean_abs_error": float(np.mean([abs(r["error"]) for r in fitted])) if fitted else None,
        "rank_correlation": spearman([r["predicted"] for r in fitted], [r["measured"] for r in fitted]),
        "best_measured_size": min(rows, key=lambda r: r["measured"])["size"],
        "best_predicted_size": min(fitted, key=lambda r: r["predicted"])["size"] if fitted else None,
    }
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
                if meets_limits(c["storage_bytes"], lat, lim["max_storage_mb"], lim["max_latency_ms"]):
                    cands.append((r["measured"] + final["penalty"], f"{r['size']}.{key}"))
        best = min(cands)[1] if cands else None
        recd = plan["recommendation"]["best"]["variant"]
        out.update(penalty=pen_rows, penalty_mean_abs_error=float(np.mean([abs(p["error"]) for p in pen_rows])),
                   best_fitting_measured=best, recommended=recd, recommendation_was_best=best == recd,
                   recommended_size_was_best=best is not None and best.split(".")[0] == recd.split(".")[0])
    return out


@dataclass
class TextTable:
    """A table as the strings every renderer shows."""

    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


def check_tables(result: dict[str, Any]) -> list[TextTable]:
    """The comparison's tables: final losses per size (caption: interval hits, rank correlation, the
    recommendation, the penalty error), then the penalty per variant when it was measured."""
    sizes = []
    for s in result["sizes"]:
        if not math.isfinite(s["predicted"]):  # the pilot gave too few points for a fit
            sizes.append([s["size"], "no fit", "-", f"{s['measured']:.3f}", "-", "-"])
            continue
        sizes.append([s["size"], f"{s['predicted']:.3f}", f"[{s['interval'][0]:.3f}, {s['interval'][1]:.3f}]",
                      f"{s['measured']:.3f}", f"{s['error']:+.3f}", "yes" if s["inside"] else "NO"])
    rc = result["rank_correlation"]
    mae = result["mean_abs_error"]
    parts = [f"{result['inside']}/{result['predicted']} predicted sizes inside their {result['level']:.0%} interval "
             f"({result['of']} in the run); mean |error| {'-' if mae is None else f'{mae:.3f}'}; rank correlation (Spearman) "
             f"{'-' if rc is None else f'{rc:.2f}'}"]
    if "penalty" in result:
        parts.append(f"recommended {result['recommended']}, best that fit {result['best_fitting_measured']} "
                     f"({'the same' if result['recommendation_was_best'] else 'different'})")
        parts.append(f"penalty error (pilot − final, the Figure 8 assumption) mean |error| "
                     f"{result['penalty_mean_abs_error']:.4f}")
    else:
        parts.append("compression penalties not measured on the final checkpoints")
    out = [TextTable("final validation loss: predicted by the plan, measured by the run",
                     ["size", "predicted", f"interval ({result['level']:.0%})", "measured", "error", "inside"], sizes,
                     "; ".join(parts))]
    if "penalty" in result:
        out.append(TextTable("compression penalty (masked-LM loss increase): pilot vs final checkpoint",
                             ["variant", "pilot penalty", "final penalty", "error (pilot − final)"],
                             [[p["variant"], f"{p['pilot_penalty']:+.4f}", f"{p['final_penalty']:+.4f}",
                               f"{p['error']:+.4f}"] for p in result["penalty"]]))
    return out


def plan_section_markdown(record: dict[str, Any]) -> str:
    """The report's plan section (`record`: `plan_comparison`'s {plan, plan_sha256, comparison, note})."""
    out = ["## The plan against this run (`tlc plan --check`)\n", f"{_intro(record)}\n"]
    for t in check_tables(record["comparison"]) if record.get("comparison") else []:
        out += [f"**{t.title}**\n", "| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header),
                *["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in t.rows], ""]
        if t.caption:
            out.append(f"_{t.caption}_\n")
    return "\n".join(out)


def plan_section_html(record: dict[str, Any]) -> str:
    from tlc_export.report.html import esc

    out = ["<h2 id='plan-check'>The plan against this run (<code>tlc plan --check</code>)</h2>",
           f"<p class='note'>{esc(_intro(record))}</p>"]
    for i, t in enumerate(check_tables(record["comparison"]) if record.get("comparison") else []):
        head = "".join(f"<th class='l'>{esc(h)}</th>" for h in t.header)
        body = "".join("<tr>" + "".join(f"<td class='l'>{esc(c)}</td>" for c in r) + "</tr>" for r in t.rows)
        out.append(f"<h3>{esc(t.title)}</h3><div class='scroll'><table id='plan-check-{i}'><thead><tr>{head}</tr></thead>"
                   f"<tbody>{body}</tbody></table></div>")
        if t.caption:
            out.append(f"<p class='note'>{esc(t.caption)}</p>")
    return "\n".join(out)


def _intro(record: dict[str, Any]) -> str:
    text = (f"This run was made from the plan {record['plan']} (sha256 {str(record.get('plan_sha256'))[:12]}): "
            "its predictions against what the run measured.")
    return text + (f" Not compared: {record['note']}" if record.get("note") else "")


def plan_check_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The report stage's output (manifest) for the plan section: the headline figures; the rest in
    report/plan_check.json."""
    c = record.get("comparison") or {}
    keys = ("inside", "of", "predicted", "mean_abs_error", "rank_correlation", "recommended", "best_fitting_measured",
            "recommendation_was_best", "penalty_mean_abs_error")
    return {"file": "report/plan_check.json", "plan": record["plan"], "plan_sha256": record.get("plan_sha256"),
            **{k: c.get(k) for k in keys}, "note": record.get("note")}
