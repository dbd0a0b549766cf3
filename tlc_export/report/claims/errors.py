"""Claim 5: quantization error shrinks with model size and depth (Figure 9, §5.3).

Input: compress/error_analysis.json, rows `{model, module_type, params, quant_mean, quant_var,
prune_mean, prune_var, …}` (compress/analysis.py): per module type, the mean and variance over all
weight entries of |W − Quantize(W)| and of |W − Prune(W)|. Each size's overall mean is the
parameter-weighted mean over module types; the difference largest − smallest gets a normal
interval from the entries' variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tlc_export.report.claims.card import Claim
from tlc_export.report.claims.rules import NOT_MEASURED, decide_difference, difference_rule
from tlc_export.report.claims.sizes import Size

_Z95 = 1.959963984540054
INTERVAL_METHOD = ("normal approximation, mean ± 1.96 · sd / √entries per size, treating weight entries as samples: it "
                   "says how precisely each mean is known, not how it varies between training seeds (compare runs "
                   "with `tlc report --compare` for that)")


def pooled(rows: Sequence[dict[str, Any]], kind: str) -> tuple[float, float, int]:
    """(mean, variance, entries) over all module types, from per-type means and variances."""
    n = sum(int(r["params"]) for r in rows)
    if n <= 0:
        raise ValueError("no weight entries")
    mean = sum(int(r["params"]) * float(r[f"{kind}_mean"]) for r in rows) / n
    second = sum(int(r["params"]) * (float(r[f"{kind}_var"]) + float(r[f"{kind}_mean"]) ** 2) for r in rows) / n
    return mean, max(second - mean * mean, 0.0), n


def claim_errors(sizes: Sequence[Size], error_rows: Any) -> Claim:
    base = {"number": 5, "key": "quantization-error", "figure": "Figure 9 (left)",
            "claim": "Quantization error of the weights shrinks with model size and depth",
            "rule": difference_rule("the mean |W − Quantize(W)| over all analysed weight matrices", "lower"),
            "sources": ["compress/error_analysis.json"]}
    rows = [r for r in (error_rows or []) if isinstance(r, dict) and r.get("model") and r.get("params")]
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_model.setdefault(str(r["model"]), []).append(r)
    have = [s for s in sizes if s.name in by_model]
    if len(have) < 2:
        if not rows:
            why = "no compress/error_analysis.json in this run; run the compress stage"
        elif len(sizes) < 2:
            why = f"the run has one size ({have[0].name if have else '?'}); the claim compares sizes: add one to models.sizes"
        else:
            why = "compress/error_analysis.json covers fewer than two sizes; rerun the compress stage"
        return Claim(status=NOT_MEASURED, reason=why, evidence=why, **base)
    small, large = have[0], have[-1]
    stats = {s.name: {"quant": pooled(by_model[s.name], "quant"), "prune": pooled(by_model[s.name], "prune")} for s in have}
    (ms, vs, ns), (ml, vl, nl) = stats[small.name]["quant"], stats[large.name]["quant"]
    d = ml - ms
    half = _Z95 * math.sqrt(vl / nl + vs / ns)
    lo, hi = d - half, d + half
    if not all(map(math.isfinite, (lo, hi))):
        why = "compress/error_analysis.json holds non-finite errors (non-finite weights?); rerun the compress stage"
        return Claim(status=NOT_MEASURED, reason=why, evidence=why, **base)
    status = decide_difference(lo, hi, "lower")
    types_s = {r["module_type"]: float(r["quant_mean"]) for r in by_model[small.name]}
    types_l = {r["module_type"]: float(r["quant_mean"]) for r in by_model[large.name]}
    shared = [t for t in types_s if t in types_l]
    lower = [t for t in shared if types_l[t] < types_s[t]]
    bits = by_model[large.name][0].get("bits")
    sparsity = by_model[large.name][0].get("sparsity")
    per_size = [{"model": s.name, "params": s.params, "layers": s.layers, "hidden": s.hidden,
                 "quant_mean": stats[s.name]["quant"][0], "quant_std": math.sqrt(stats[s.name]["quant"][1]),
                 "prune_mean": stats[s.name]["prune"][0], "prune_std": math.sqrt(stats[s.name]["prune"][1]),
                 "entries": stats[s.name]["quant"][2]} for s in have]
    listing = ", ".join(f"{r['model']} {r['quant_mean']:.3g} (sd {r['quant_std']:.2g})" for r in per_size)
    prune_txt = ", ".join(f"{r['model']} {r['prune_mean']:.3g}" for r in per_size)
    rel = d / ms if ms else None
    rel_txt = f" ({100 * rel:+.1f} %)" if rel is not None else ""
    evidence = (f"Mean |W − Q{bits}(W)| over the weight matrices: {listing}. {large.name} − {small.name}: {d:+.3g} "
                f"[{lo:+.3g}, {hi:+.3g}]{rel_txt}; lower for {large.name} in {len(lower)} of {len(shared)} "
                f"module types. Pruning error at {round(100 * float(sparsity or 0))} % sparsity (Figure 9, right): {prune_txt}.")
    return Claim(status=status, evidence=evidence, metric=f"Δ mean {bits}-bit quantization error, largest − smallest size",
                 unit=f"mean |W − Q{bits}(W)|",
                 estimate=d, interval=(lo, hi), interval_method=INTERVAL_METHOD,
                 compared={"larger": large.name, "smaller": small.name},
                 numbers={"bits": bits, "sparsity": sparsity, "per_size": per_size, "relative_difference": rel,
                          "module_types_lower_for_larger": lower, "module_types_compared": shared},
                 notes=["The analysis uses each size's finetuned (uncompressed) model with the paper's per-tensor "
                        "quantizer; the paper's Figure 9 compares depths 6, 12 and 24 at 768 hidden."], **base)
