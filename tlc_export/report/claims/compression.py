"""Claim 3: larger models lose less accuracy to compression (Figures 6–8).

For 4-bit quantization and for the highest sparsity of the recipe, each size's accuracy drop is
measured from its own uncompressed model (s00.b32) on the same test examples, from the per-example
predictions stored beside every variant. Every size is scored on the same test examples, so the
difference of two sizes' drops is a mean over examples of u = (dense_L − compressed_L) −
(dense_S − compressed_S) of the correctness flags (−2..2). It is decided by the exact sign-flip
test on u (`stats.sign_flip_test`) together with the bootstrap interval of its mean: a part holds
(or does not) only when the test rejects at 0.05 *and* the interval excludes 0 on that side. The
bootstrap alone decided on as few as 4 examples that differ; the exact test cannot reject on
fewer than 6 (2 · 0.5^5 > 0.05). A part is not measured when an uncompressed model it compares did
not learn the task: a drop from a model at the majority baseline says nothing about compression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlc_export.errors import TlcError
from tlc_export.predictions import load_predictions
from tlc_export.report.claims.card import Claim, Part
from tlc_export.report.claims.rules import (
    ALPHA,
    COMBINE_RULE,
    FAILS,
    HOLDS,
    NOISE,
    NOT_MEASURED,
    combine,
    decide_difference,
    difference_rule,
)
from tlc_export.report.claims.sizes import Size
from tlc_export.stats import BOOTSTRAP_SAMPLES, bootstrap_mean, compare_paired, sign_flip_test

QUANT_BITS = 4  # the paper's Figure 8 setting
INTERVAL_METHOD = (f"bootstrap over test examples ({BOOTSTRAP_SAMPLES:,} resamples, the same examples drawn for "
                   "every model), 95 % percentile interval; the exact sign-flip test on the per-example difference "
                   "must reject (two-sided, alpha 0.05) too")


@dataclass
class _Correct:
    """Correctness flags of one variant on the reporting split, and its labels (to check alignment)."""

    correct: np.ndarray
    labels: np.ndarray


class _Missing(Exception):
    """An input of the claim is absent; the message is the reason shown in the card."""


def _dense(variants: Sequence[dict[str, Any]], model: str) -> dict[str, Any] | None:
    return next((r for r in variants if r.get("model") == model and not float(r.get("sparsity") or 0)
                 and int(r.get("bits") or 32) == 32), None)


def _row(variants: Sequence[dict[str, Any]], model: str, sparsity: float, bits: int) -> dict[str, Any] | None:
    return next((r for r in variants if r.get("model") == model and abs(float(r.get("sparsity") or 0) - sparsity) < 1e-9
                 and int(r.get("bits") or 32) == bits), None)


class _Loader:
    """Reads each variant's predictions once; a missing or unreadable input raises `_Missing` with the fix."""

    def __init__(self, run_dir: Path, split: str) -> None:
        self.run_dir, self.split = run_dir, split
        self.cache: dict[str, _Correct] = {}

    def __call__(self, row: dict[str, Any]) -> _Correct:
        rel = row.get("predictions")
        if not rel:
            raise _Missing("compress/results.json rows carry no per-example predictions (`predictions`), so accuracy "
                           "drops cannot be paired on the same test examples; rerun the compress stage with a tlc that "
                           "writes them")
        if rel not in self.cache:
            try:
                splits = load_predictions(self.run_dir / rel)
            except TlcError as exc:
                raise _Missing(str(exc)) from exc
            if self.split not in splits:
                raise _Missing(f"{rel} holds no {self.split!r} split (has {sorted(splits)}); rerun the compress stage")
            sp = splits[self.split]
            self.cache[rel] = _Correct(np.asarray(sp.correct, dtype=bool), np.asarray(sp.labels))
        return self.cache[rel]


def _part(name: str, label: str, sizes: Sequence[Size], variants: Sequence[dict[str, Any]],
          sparsity: float, bits: int, load: _Loader) -> Part:
    """One compression setting: per-size drops with paired intervals, and the deciding difference of drops."""
    pairs: list[tuple[Size, dict[str, Any], dict[str, Any]]] = []
    for s in sizes:
        d, c = _dense(variants, s.name), _row(variants, s.name, sparsity, bits)
        if d is not None and c is not None:
            pairs.append((s, d, c))
    if len(pairs) < 2:
        if len(sizes) < 2:
            why = f"the run has one size ({sizes[0].name if sizes else '?'}); the claim compares sizes: add one to models.sizes"
        elif pairs:
            why = f"only {pairs[0][0].name} has both its uncompressed and its {label} variant; the claim compares sizes"
        else:
            why = f"no size has both its uncompressed and its {label} variant in compress/results.json"
        return Part(name, NOT_MEASURED, why, reason=why)
    try:
        flags = [(s, load(d), load(c), d, c) for s, d, c in pairs]
    except _Missing as exc:
        # Without per-example predictions the drops have no paired interval and decide nothing, but the
        # result rows' accuracies still show which way they point.
        points = [{"model": s.name, "uncompressed": d["variant"], "compressed": c["variant"],
                   "drop": float(d[f"{load.split}_accuracy"]) - float(c[f"{load.split}_accuracy"])}
                  for s, d, c in pairs
                  if d.get(f"{load.split}_accuracy") is not None and c.get(f"{load.split}_accuracy") is not None]
        shown = ", ".join(f"{r['model']} {100 * r['drop']:+.1f}" for r in points)
        evidence = (f"{label}: {load.split} accuracy lost to compression (positive = lost, negative = gained), points, "
                    f"without intervals: {shown}." if points else str(exc))
        return Part(name, NOT_MEASURED, evidence, reason=str(exc), numbers={"per_size_point_estimates": points})
    weak = [f"{s.name} ({d['variant']})" for s, _, _, d, _ in flags if d.get("learned_task") is False]
    if weak:
        why = (f"the uncompressed {' and '.join(weak)} did not learn the task (not significantly above the majority "
               "class), so its accuracy drop measures nothing about compression; train longer (pretrain or finetune)")
        return Part(name, NOT_MEASURED, why, reason=why)
    labels0 = flags[0][1].labels
    if any(not np.array_equal(x.labels, labels0) for _, dn, cp, _, _ in flags for x in (dn, cp)):
        why = f"the sizes' {load.split} predictions are not on the same examples (labels differ); rerun finetune and compress"
        return Part(name, NOT_MEASURED, why, reason=why)
    per_size = []
    for s, dn, cp, drow, crow in flags:
        pc = compare_paired(dn.correct, cp.correct)
        drop, lo, hi = pc.diff, pc.diff_ci_low, pc.diff_ci_high
        per_size.append({"model": s.name, "params": s.params, "uncompressed": drow["variant"], "compressed": crow["variant"],
                         f"{load.split}_accuracy_uncompressed": float(dn.correct.mean()),
                         f"{load.split}_accuracy_compressed": float(cp.correct.mean()),
                         "drop": drop, "drop_interval": (lo, hi), "examples": int(dn.correct.size)})
    (small, s_dn, s_cp, _, _), (large, l_dn, l_cp, _, _) = flags[0], flags[-1]
    per_example = (l_dn.correct.astype(np.int8) - l_cp.correct) - (s_dn.correct.astype(np.int8) - s_cp.correct)
    d, lo, hi = bootstrap_mean(per_example)
    p = sign_flip_test(per_example)
    status = decide_drop_difference(lo, hi, p)
    drops = [r["drop"] for r in per_size]
    if len(drops) > 2 and all(b < a for a, b in zip(drops, drops[1:], strict=False)):
        shape = "shrinks with every step up in size"
    elif drops[-1] < drops[0]:
        shape = ("is smaller for the largest size than for the smallest"
                 + (", but not at every step up in size" if len(drops) > 2 else ""))
    else:
        shape = "does not shrink with size"
    listing = ", ".join(f"{r['model']} {100 * r['drop']:+.1f} [{100 * r['drop_interval'][0]:+.1f}, "
                        f"{100 * r['drop_interval'][1]:+.1f}]" for r in per_size)
    evidence = (f"{label}: {load.split} accuracy lost to compression, each size against its own uncompressed model "
                f"(positive = lost, negative = gained), points: {listing}. "
                f"The drop {shape}. {large.name} − {small.name}: {100 * d:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}], "
                f"exact sign-flip test on the {int(np.count_nonzero(per_example))} examples where the drops differ: "
                f"p = {p:.3g}.")
    return Part(name, status, evidence, estimate=d, interval=(lo, hi),
                numbers={"sparsity": sparsity, "bits": bits, "per_size": per_size, "drop_shape": shape,
                         "sign_flip_p": p, "examples_differing": int(np.count_nonzero(per_example)),
                         "larger": large.name, "smaller": small.name})


def decide_drop_difference(lo: float, hi: float, p: float, alpha: float = ALPHA) -> str:
    """A part's status: the interval of d (largest − smallest size's drop) and the exact test must agree."""
    side = decide_difference(lo, hi, "lower")
    return side if side in (HOLDS, FAILS) and p < alpha else NOISE


FIGURE = "Figures 6, 7 and 8"
CLAIM = "Larger models lose less accuracy to compression (4-bit quantization, the highest sparsity)"


def _rule(split: str) -> str:
    return (difference_rule(f"the {split} accuracy drop from the size's own uncompressed model (fraction)", "lower")
            + " A decided part also needs the exact sign-flip test on the per-example difference of drops to reject "
            "(two-sided p < 0.05); a part whose uncompressed models did not learn the task is not measured. "
            + COMBINE_RULE)


def claim_compression(sizes: Sequence[Size], variants: Sequence[dict[str, Any]], run_dir: Path,
                      split: str = "test") -> Claim:
    load = _Loader(Path(run_dir), split)
    if not variants:
        why = "no compress/results.json in this run; run the compress stage"
        return Claim(number=3, key="compression-drop", figure=FIGURE, claim=CLAIM, status=NOT_MEASURED, reason=why,
                     evidence=why, rule=_rule(split), sources=["compress/results.json"])
    bits_avail = sorted({int(r.get("bits") or 32) for r in variants
                         if not float(r.get("sparsity") or 0) and int(r.get("bits") or 32) < 32})
    sparsities = sorted({float(r["sparsity"]) for r in variants if float(r.get("sparsity") or 0) > 0})
    parts = []
    if bits_avail:
        bits = QUANT_BITS if QUANT_BITS in bits_avail else bits_avail[0]
        label = f"{bits}-bit quantization" + ("" if bits == QUANT_BITS else f" (the recipe has no {QUANT_BITS}-bit; its lowest width)")
        parts.append(_part("quantization", label, sizes, variants, 0.0, bits, load))
    else:
        why = "the recipe quantizes nothing (compress.quantize.bits has no width below 32)"
        parts.append(Part("quantization", NOT_MEASURED, why, reason=why))
    if sparsities:
        s = sparsities[-1]
        parts.append(_part("pruning", f"{round(100 * s)} % sparsity (the recipe's highest)", sizes, variants, s, 32, load))
    else:
        why = "the recipe prunes nothing (compress.prune.sparsity is empty)"
        parts.append(Part("pruning", NOT_MEASURED, why, reason=why))
    status = combine(p.status for p in parts)
    lead = next((p for p in parts if p.interval is not None), None)
    reason = None
    if status == NOT_MEASURED:
        reasons = list(dict.fromkeys(p.reason for p in parts if p.reason))
        reason = "; ".join(reasons)
    evidence = " ".join(p.evidence if p.status != NOT_MEASURED or p.evidence != p.reason
                        else f"{p.name}: not measured ({p.reason})." for p in parts)
    return Claim(
        number=3, key="compression-drop", figure=FIGURE, claim=CLAIM,
        status=status, reason=reason, evidence=evidence, rule=_rule(split),
        metric=(f"Δ {split} accuracy drop under {lead.name}, largest − smallest size (fraction; a drop is the "
                "accuracy lost to compression, positive = lost)" if lead else None),
        unit="Δ drop (fraction)" if lead else None,
        estimate=lead.estimate if lead else None, interval=lead.interval if lead else None,
        interval_method=INTERVAL_METHOD if lead else None,
        compared=({"larger": lead.numbers["larger"], "smaller": lead.numbers["smaller"]} if lead else None),
        numbers={"split": split}, parts=parts,
        notes=["Pruned variants were recovered by finetuning at each level of the ladder (§4.3); quantized ones "
               "were not (post-hoc, §4.2)."],
        sources=["compress/results.json"] + sorted(load.cache),
    )
