"""Claim 4: large and heavily compressed dominates the accuracy–storage frontier (Figures 6 and 7).

This is the report's existing verdict (`report.answers.train_large_verdict`), restated as a claim.
Its decision is the verdict's own; this module only maps it onto the card's statuses. Newer
verdicts carry `outcome` ("won" / "lost" / "within noise" / None), the paired `comparison` behind
it and the `split` it was taken on; older ones only `decided` and `won`, read as a fallback.
"""

from __future__ import annotations

from typing import Any

from tlc_export.report.answers import Verdict, train_large_verdict
from tlc_export.report.claims.card import Claim
from tlc_export.report.claims.rules import FAILS, HOLDS, NOT_MEASURED, status_from_outcome

_UNSET = object()
CLAIM = "Large and heavily compressed beats small and lightly compressed at equal or less storage"


def claim_frontier(variants: list[dict[str, Any]], verdict: Verdict | None = None) -> Claim:
    if not variants and verdict is None:
        why = "no compress/results.json in this run; run the compress stage"
        return Claim(number=4, key="frontier", figure="Figures 6 and 7", claim=CLAIM, status=NOT_MEASURED,
                     reason=why, evidence=why, rule=" ".join((Verdict.__doc__ or "").split()),
                     sources=["compress/results.json"])
    v = verdict if verdict is not None else train_large_verdict(variants)
    outcome = getattr(v, "outcome", _UNSET)
    comparison = getattr(v, "comparison", None)
    split = getattr(v, "split", None)
    if outcome is _UNSET:  # a verdict without paired statistics
        status = (HOLDS if v.won else FAILS if v.witness is not None else NOT_MEASURED) if v.decided else NOT_MEASURED
        how = ("the verdict's own rule (no paired test on this version of the verdict); when no variant of the "
               "large model fits the reference's storage the comparison was not made: not measured")
    else:
        status = status_from_outcome(outcome)  # type: ignore[arg-type]
        how = "the verdict's paired test: won → holds, lost → does not hold, within noise → within noise"
    interval = None
    estimate = None
    method = None
    if comparison is not None:
        estimate = float(comparison.diff)
        interval = (float(comparison.diff_ci_low), float(comparison.diff_ci_high))
        method = str(getattr(comparison, "test", "paired comparison"))
    ref, wit = v.reference, v.witness
    numbers: dict[str, Any] = {"split": split}
    for key, row in (("reference", ref), ("witness", wit)):
        if row:
            numbers[key] = {k: row.get(k) for k in ("variant", "model", "params", "storage_bytes", "dev_accuracy",
                                                    "test_accuracy")}
    if comparison is not None and hasattr(comparison, "to_dict"):
        numbers["comparison"] = comparison.to_dict()
    rule = " ".join((Verdict.__doc__ or "").split()) + f" Status: {how}."
    reason = None
    if status == NOT_MEASURED:
        reason = v.sentence.split(". Measured anyway")[0].rstrip(".")
        if v.decided and v.witness is None and ref:
            large = max(variants, key=lambda r: (int(r.get("params") or 0), str(r.get("model"))))["model"] if variants else "the largest size"
            reason = (f"no variant of {large} fits in the storage of the small reference {ref.get('variant')} "
                      f"({float(ref.get('storage_bytes') or 0) / 1e6:.2f} MB); compress {large} harder (lower bits, higher "
                      "sparsity) to make the comparison")
    return Claim(
        number=4, key="frontier", figure="Figures 6 and 7",
        claim=CLAIM,
        status=status, reason=reason, evidence=v.sentence, rule=rule,
        metric="accuracy of the large compressed witness − the small reference (fraction)" if interval else None,
        unit="accuracy (fraction)" if interval else None,
        estimate=estimate, interval=interval, interval_method=method,
        compared=({"larger": str(wit.get("variant")), "smaller": str(ref.get("variant"))} if ref and wit else None),
        numbers=numbers, sources=["compress/results.json"],
        notes=[] if interval else ["No interval: this verdict carries no paired comparison of the two variants."],
    )
