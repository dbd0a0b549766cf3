"""Claim 5: quantization error shrinks with model size and depth (Figure 9, §5.3).

Input: compress/error_analysis.json, rows `{model, module_type, params, quant_mean, quant_var,
quant_matrix_means, prune_mean, …}` (compress/analysis.py): per module type, the error statistics
over all weight entries and one mean |W − Quantize(W)| per weight matrix.

The unit is the weight matrix, not the entry: entries of one matrix share its scale and its
training, so treating millions of entries as independent made 98 % of simulated runs with no size
effect "significant". The compared quantity is an unweighted mean over the Transformer blocks'
module types (attention in, attention out, FFN in, FFN out) of the mean per-matrix error; the
embeddings (up to 70 % of a small model's weights, one matrix per size) and the heads ("other")
are left out, so no single matrix decides. Its interval is Welch's (the matrices of each type are
the replicates, Welch–Satterthwaite degrees of freedom; `stats.welch_mean_of_differences`): a
bootstrap over the 2–12 matrices of a type would be anti-conservative, as it was over few batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tlc_export.report.claims.card import Claim
from tlc_export.report.claims.rules import NOT_MEASURED, decide_difference, difference_rule
from tlc_export.report.claims.sizes import Size
from tlc_export.stats import welch_mean_of_differences

BLOCK_TYPES = ("attention.qkv", "attention.out", "ffn.in", "ffn.out")
INTERVAL_METHOD = ("Welch t-interval with weight matrices as units: per module type the difference of the two sizes' "
                   "mean per-matrix errors, averaged unweighted over the module types, Welch–Satterthwaite degrees of "
                   "freedom, 95 %; it says how precisely this run's matrices pin the difference, not how it varies "
                   "between training seeds")


def pooled(rows: Sequence[dict[str, Any]], kind: str) -> tuple[float, float, int]:
    """(mean, variance, entries) over all module types, from per-type means and variances (descriptive)."""
    n = sum(int(r["params"]) for r in rows)
    if n <= 0:
        raise ValueError("no weight entries")
    mean = sum(int(r["params"]) * float(r[f"{kind}_mean"]) for r in rows) / n
    second = sum(int(r["params"]) * (float(r[f"{kind}_var"]) + float(r[f"{kind}_mean"]) ** 2) for r in rows) / n
    return mean, max(second - mean * mean, 0.0), n


def _matrices(rows: Sequence[dict[str, Any]], kind: str) -> dict[str, list[float]]:
    return {str(r["module_type"]): [float(x) for x in r[f"{kind}_matrix_means"]] for r in rows
            if r.get("module_type") in BLOCK_TYPES and r.get(f"{kind}_matrix_means")}


def block_mean(per_type: dict[str, list[float]], types: Sequence[str]) -> float:
    """Unweighted mean over `types` of each type's mean per-matrix error."""
    return sum(sum(per_type[t]) / len(per_type[t]) for t in types) / len(types)


def claim_errors(sizes: Sequence[Size], error_rows: Any) -> Claim:
    base = {"number": 5, "key": "quantization-error", "figure": "Figure 9 (left)",
            "claim": "Quantization error of the weights shrinks with model size and depth",
            "rule": difference_rule("the mean |W − Quantize(W)| per weight matrix, averaged unweighted over the "
                                    "Transformer blocks' module types (embeddings and heads left out)", "lower")
            + " Module types compared need at least two matrices in each size.",
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
    bits = by_model[large.name][0].get("bits")
    sparsity = by_model[large.name][0].get("sparsity")
    pooled_q = {s.name: pooled(by_model[s.name], "quant") for s in have}
    pooled_p = {s.name: pooled(by_model[s.name], "prune") for s in have}
    mats = {s.name: _matrices(by_model[s.name], "quant") for s in have}
    types = [t for t in BLOCK_TYPES if len(mats[small.name].get(t, [])) >= 2 and len(mats[large.name].get(t, [])) >= 2]
    descriptive = ", ".join(f"{s.name} {pooled_q[s.name][0]:.3g}" for s in have)
    if not types:
        why = ("compress/error_analysis.json holds no per-matrix errors (quant_matrix_means) for two or more matrices of "
               "a Transformer module type in both sizes; rerun the compress stage with this tlc")
        return Claim(status=NOT_MEASURED, reason=why,
                     evidence=f"Parameter-weighted mean |W − Q{bits}(W)| (descriptive, no interval): {descriptive}. {why}.",
                     numbers={"pooled_quant_mean": {k: v[0] for k, v in pooled_q.items()}}, **base)
    d, lo, hi, df = welch_mean_of_differences([(mats[large.name][t], mats[small.name][t]) for t in types])
    if not all(map(math.isfinite, (d, lo, hi))):
        why = "compress/error_analysis.json holds non-finite errors (non-finite weights?); rerun the compress stage"
        return Claim(status=NOT_MEASURED, reason=why, evidence=why, **base)
    status = decide_difference(lo, hi, "lower")
    per_size = []
    for s in have:
        shared = [t for t in types if len(mats[s.name].get(t, [])) >= 1]
        per_size.append({"model": s.name, "params": s.params, "layers": s.layers, "hidden": s.hidden,
                         "block_quant_mean": block_mean(mats[s.name], shared) if len(shared) == len(types) else None,
                         "matrices": {t: len(mats[s.name].get(t, [])) for t in types},
                         "pooled_quant_mean": pooled_q[s.name][0], "pooled_prune_mean": pooled_p[s.name][0]})
    lower = [t for t in types if sum(mats[large.name][t]) / len(mats[large.name][t])
             < sum(mats[small.name][t]) / len(mats[small.name][t])]
    ms = block_mean(mats[small.name], types)
    rel = d / ms if ms else None
    listing = ", ".join(f"{r['model']} {r['block_quant_mean']:.3g}" for r in per_size if r["block_quant_mean"] is not None)
    prune_txt = ", ".join(f"{r['model']} {r['pooled_prune_mean']:.3g}" for r in per_size)
    evidence = (f"Mean |W − Q{bits}(W)| per weight matrix, averaged over {len(types)} module types: {listing}. "
                f"{large.name} − {small.name}: {d:+.3g} [{lo:+.3g}, {hi:+.3g}]"
                + (f" ({100 * rel:+.1f} %)" if rel is not None else "")
                + f"; lower for {large.name} in {len(lower)} of {len(types)} module types. Parameter-weighted over every "
                f"matrix including embeddings (descriptive): {descriptive}. Pruning error at "
                f"{round(100 * float(sparsity or 0))} % sparsity (Figure 9, right; descriptive): {prune_txt}.")
    return Claim(status=status, evidence=evidence,
                 metric=f"Δ mean {bits}-bit quantization error per matrix over module types, largest − smallest size",
                 unit=f"mean |W − Q{bits}(W)|",
                 estimate=d, interval=(lo, hi), interval_method=INTERVAL_METHOD,
                 compared={"larger": large.name, "smaller": small.name},
                 numbers={"bits": bits, "sparsity": sparsity, "per_size": per_size, "relative_difference": rel,
                          "module_types_compared": types, "module_types_lower_for_larger": lower,
                          "welch_df": df},
                 notes=["The analysis uses each size's finetuned (uncompressed) model with the paper's per-tensor "
                        "quantizer; the paper's Figure 9 compares depths 6, 12 and 24 at 768 hidden."], **base)
