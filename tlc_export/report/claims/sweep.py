"""Claims 6 and 7, measured across the points of a sweep (a single run says why it cannot).

6. "Model size beats batch size in wall-clock" (§3, Figure 13, Table 1): under the same budget,
   growing the model lowers the validation loss more than growing the batch size of the smaller
   model. One part per starting batch b (every swept batch size with a larger one): d_b = final
   loss of the largest size at b − the smallest size's best final loss at any batch larger than b
   (its best learning rate too, when the sweep varies it). The paper's advice is to grow the batch
   up to the critical batch size and the model after it (Figure 13: from 256 a larger batch still
   pays), so the part that starts at the largest such b decides (holds when its whole interval is
   below 0); the parts from smaller batches are shown as evidence. Choosing the smaller model's best
   batch on the same validation batches favours batch size, so a "holds" is conservative.
7. "Larger models overfit small data" (§5.1, Figure 14): at the smallest data fraction the largest
   size ends with a higher validation loss than the smallest. d = largest − smallest, holds when the
   whole interval is above 0; one part per group of points that differ only in data.fraction.

Both compare final validation losses on the same validation batches (a paired bootstrap over the
batches, `stats.paired_ratio_bootstrap`); points scored on different batches (a different
`pretrain.eval_batch_size`, `eval_batches` or seed) are not compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlc_export.report.claims.card import Claim, Part
from tlc_export.report.claims.curves import INTERVAL_METHOD, point_batches, point_loss
from tlc_export.report.claims.rules import (
    COMBINE_RULE,
    MIN_BATCHES,
    NOT_MEASURED,
    combine,
    decide_difference,
)
from tlc_export.report.claims.sizes import Size
from tlc_export.stats import paired_ratio_bootstrap

BATCH = "pretrain.batch_size"
LR = "pretrain.lr"
FRACTION = "data.fraction"

SIZE_VS_BATCH = {"number": 6, "key": "size-beats-batch", "figure": "Figure 13, Table 1",
                 "claim": "Increasing model size beats increasing batch size in wall-clock time"}
OVERFIT = {"number": 7, "key": "overfit-small-data", "figure": "Figure 14",
           "claim": "Larger models overfit small data: with a small fraction of the corpus they end with a higher "
                    "validation loss than smaller models"}
_RULE6 = ("Per starting batch size b (each swept batch size with a larger one): d_b = final validation loss of the "
          "largest size at b − the smallest size's lowest final loss at any batch size larger than b, on the same "
          "validation batches, with its 95 % interval. The part starting at the largest such b decides (the paper "
          "grows the batch up to the critical batch size, then the model): holds when its whole interval is below 0 "
          "(the bigger model did better than the bigger batch), does not hold when wholly above 0, within noise "
          "otherwise; the other parts are evidence. Points differing in other swept fields than batch size and "
          "learning rate are compared only within their group; the group with the largest data.fraction decides. "
          f"Needs per-batch validation losses from at least {MIN_BATCHES} batches.")
_RULE7 = ("Per group of points that differ only in data.fraction: d = final validation loss of the largest size − "
          "the smallest size's, at the group's smallest fraction, paired over the validation batches, with its 95 % "
          "interval; holds when the whole interval is above 0 (the larger model is worse), does not hold when wholly "
          "below 0, within noise otherwise. " + COMBINE_RULE)


@dataclass
class PointRun:
    """What the sweep claims read from one point that finished pretraining."""

    id: str
    values: dict[str, Any]  # the point's swept values (field path → value)
    batch_size: int
    lr: float
    fraction: float
    sizes: list[Size]  # fewest parameters first
    finals: dict[str, dict[str, Any]]  # size → its last curve point
    epochs: dict[str, float] = field(default_factory=dict)

    def group(self, ignore: set[str]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, repr(v)) for k, v in self.values.items() if k not in ignore))


def not_in_single_run() -> list[Claim]:
    """Claims 6 and 7 on a single run's card: not measured, and how to measure them."""
    why6 = ("one run has one batch size; the claim compares runs: sweep pretrain.batch_size with two or more sizes "
            "(recipes/ablation-batch.yaml); the sweep's report measures it")
    why7 = ("one run has one data fraction; the claim compares runs: sweep data.fraction with two or more sizes "
            "(recipes/ablation-data.yaml); the sweep's report measures it")
    return [Claim(status=NOT_MEASURED, reason=why6, evidence=why6, rule=_RULE6, **SIZE_VS_BATCH),
            Claim(status=NOT_MEASURED, reason=why7, evidence=why7, rule=_RULE7, **OVERFIT)]


@dataclass
class _Loss:
    point: PointRun
    size: Size
    loss: float
    batches: tuple[np.ndarray, np.ndarray] | None


def _loss(p: PointRun, size: Size) -> _Loss | None:
    fin = p.finals.get(size.name)
    if fin is None:
        return None
    loss = point_loss(fin)
    if loss is None or not math.isfinite(loss):
        return None
    return _Loss(p, size, loss, point_batches(fin))


def _paired(a: _Loss, b: _Loss) -> tuple[float, tuple[float, float] | None, int | None, str | None]:
    """a − b with its interval, or why there is none."""
    d = a.loss - b.loss
    if a.batches is None or b.batches is None:
        return d, None, None, "the curves record no per-batch validation losses; rerun the pretrain stage"
    (sa, ca), (sb, cb) = a.batches, b.batches
    if sa.size != sb.size or not np.array_equal(ca, cb):
        return d, None, None, (f"{a.point.id} and {b.point.id} were scored on different validation batches; give "
                               "every point the same pretrain.eval_batch_size, eval_batches and seed")
    if sa.size < MIN_BATCHES:
        return d, None, int(sa.size), (f"only {sa.size} validation batches; an interval needs at least {MIN_BATCHES}: "
                                       f"raise pretrain.eval_batches")
    est, lo, hi = paired_ratio_bootstrap(sa, ca, sb, cb)
    return est, (lo, hi), int(sa.size), None


def _common_sizes(points: Sequence[PointRun]) -> list[Size]:
    names = set.intersection(*({s.name for s in p.sizes} for p in points))
    order = points[0].sizes
    return [s for s in order if s.name in names]


def _fmt(d: float, iv: tuple[float, float] | None) -> str:
    return f"{d:+.3f}" + (f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" if iv else "")


def claim_size_vs_batch(points: Sequence[PointRun]) -> Claim:
    base = {**SIZE_VS_BATCH, "rule": _RULE6,
            "metric": "Δ final validation loss, largest size at the smallest batch − smallest size at its best larger "
                      "batch (nats)",
            "sources": [f"points/{p.id}/pretrain/<size>/curves.jsonl" for p in points]}

    def nm(why: str) -> Claim:
        return Claim(status=NOT_MEASURED, reason=why, evidence=why, **base)

    if len({p.batch_size for p in points}) < 2:
        return nm("the sweep's finished points share one pretrain.batch_size; sweep it (recipes/ablation-batch.yaml)")
    groups: dict[Any, list[PointRun]] = {}
    for p in points:
        groups.setdefault(p.group({BATCH, LR}), []).append(p)
    usable = [g for g in groups.values() if len({p.batch_size for p in g}) >= 2]
    if not usable:
        return nm("no group of finished points differs only in batch size (and learning rate); run the missing points")
    group = max(usable, key=lambda g: (g[0].fraction, -sum(1 for _ in g)))
    sizes = _common_sizes(group)
    if len(sizes) < 2:
        return nm("the points pretrained fewer than two common sizes; the claim compares sizes: add one to models.sizes")
    small, large = sizes[0], sizes[-1]
    batches = sorted({p.batch_size for p in group})
    table = [{"point": p.id, "batch_size": p.batch_size, "lr": p.lr, "fraction": p.fraction,
              **{s.name: (_loss(p, s).loss if _loss(p, s) else None) for s in sizes}} for p in group]
    listing = "; ".join(f"batch {r['batch_size']} (lr {r['lr']:g}): " + ", ".join(
        f"{s.name} {r[s.name]:.3f}" for s in sizes if r.get(s.name) is not None) for r in table)
    parts: list[Part] = []
    for b0 in batches[:-1]:
        at_b0 = [x for x in (_loss(p, large) for p in group if p.batch_size == b0) if x is not None]
        larger = [x for x in (_loss(p, small) for p in group if p.batch_size > b0) if x is not None]
        small_b0 = [x for x in (_loss(p, small) for p in group if p.batch_size == b0) if x is not None]
        name = f"from batch {b0}"
        if not at_b0 or not larger:
            why = f"a final validation loss is missing (or not finite) at batch {b0} or above"
            parts.append(Part(name, NOT_MEASURED, why, reason=why, numbers={"smallest_batch": b0}))
            continue
        a = min(at_b0, key=lambda x: x.loss)
        b = min(larger, key=lambda x: x.loss)
        d, iv, n, why = _paired(a, b)
        gain_size = gain_batch = None
        if small_b0:
            s0 = min(small_b0, key=lambda x: x.loss)
            gain_size, gain_batch = s0.loss - a.loss, s0.loss - b.loss
        gains = (f"from {small.name} at batch {b0}, growing the model to {large.name} lowers the loss by "
                 f"{gain_size:.3f}, the best larger batch ({b.point.batch_size}) by {gain_batch:.3f} nats; "
                 if gain_size is not None else "")
        parts.append(Part(name, decide_difference(iv[0], iv[1], "lower") if iv else NOT_MEASURED,
                          f"{gains}{large.name}@batch {b0} − {small.name}@batch {b.point.batch_size}: {_fmt(d, iv)} nats.",
                          reason=None if iv else why, estimate=d, interval=iv,
                          numbers={"smallest_batch": b0, "best_larger_batch": b.point.batch_size,
                                   "larger": f"{large.name} @ batch {b0} ({a.point.id})",
                                   "smaller": f"{small.name} @ batch {b.point.batch_size} ({b.point.id})",
                                   "gain_from_size": gain_size, "gain_from_batch": gain_batch,
                                   "validation_batches": n}))
    measured = [p for p in parts if p.estimate is not None]
    if not measured:
        return nm("a final validation loss is missing (or not finite) for the compared points")
    decider = measured[-1]  # the largest starting batch: past the critical batch size, where the paper's claim is made
    status = decider.status
    evidence = (f"Final validation loss after the same budget at data.fraction {group[0].fraction:g}: {listing}. "
                + " ".join(f"{p.name}{' (decides)' if p is decider else ''}: {p.evidence}" for p in parts))
    return Claim(status=status, reason=decider.reason if status == NOT_MEASURED else None, evidence=evidence,
                 estimate=decider.estimate, interval=decider.interval,
                 interval_method=INTERVAL_METHOD if decider.interval else None,
                 compared={"larger": str(decider.numbers["larger"]), "smaller": str(decider.numbers["smaller"])},
                 numbers={"final_loss": table, **{k: decider.numbers[k] for k in (
                     "smallest_batch", "best_larger_batch", "gain_from_size", "gain_from_batch", "validation_batches")}},
                 parts=parts,
                 notes=["The smaller model's batch size is the best of the larger ones on the same validation batches: "
                        "that choice favours batch size, so a 'holds' is conservative.",
                        "Parts from smaller starting batches are evidence, not the decision: below the critical batch "
                        "size the paper itself grows the batch first (Figure 13)."], **base)


def claim_overfit(points: Sequence[PointRun]) -> Claim:
    base = {**OVERFIT, "rule": _RULE7,
            "metric": "Δ final validation loss at the smallest data fraction, largest − smallest size (nats)",
            "sources": [f"points/{p.id}/pretrain/<size>/curves.jsonl" for p in points]}

    def nm(why: str) -> Claim:
        return Claim(status=NOT_MEASURED, reason=why, evidence=why, **base)

    if len({p.fraction for p in points}) < 2:
        return nm("the sweep's finished points share one data.fraction; sweep it (recipes/ablation-data.yaml)")
    groups: dict[Any, list[PointRun]] = {}
    for p in points:
        groups.setdefault(p.group({FRACTION}), []).append(p)
    parts: list[Part] = []
    for g in groups.values():
        if len({p.fraction for p in g}) < 2:
            continue
        g = sorted(g, key=lambda p: p.fraction)
        low, high = g[0], g[-1]
        name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in low.values.items() if k != FRACTION) or "all points"
        sizes = _common_sizes(g)
        if len(sizes) < 2:
            why = "fewer than two common sizes"
            parts.append(Part(name, NOT_MEASURED, why, reason=why))
            continue
        small, large = sizes[0], sizes[-1]
        ls, ll = _loss(low, small), _loss(low, large)
        if ls is None or ll is None:
            why = f"a final validation loss is missing at data.fraction {low.fraction:g}"
            parts.append(Part(name, NOT_MEASURED, why, reason=why))
            continue
        d, iv, n, why = _paired(ll, ls)
        hs, hl = _loss(high, small), _loss(high, large)
        full = _paired(hl, hs) if hs and hl else None
        epochs = {s.name: low.epochs.get(s.name) for s in (small, large)}
        ep = ", ".join(f"{k} {v:.1f}" for k, v in epochs.items() if v is not None)
        ev = (f"at data.fraction {low.fraction:g}: {large.name} {ll.loss:.3f} vs {small.name} {ls.loss:.3f}, "
              f"d = {_fmt(d, iv)} nats" + (f" (epochs seen: {ep})" if ep else "")
              + (f"; at {high.fraction:g}: d = {_fmt(full[0], full[1])}" if full else "") + ".")
        parts.append(Part(name, decide_difference(iv[0], iv[1], "higher") if iv else NOT_MEASURED, ev,
                          reason=None if iv else why, estimate=d, interval=iv,
                          numbers={"fraction": low.fraction, "larger": large.name, "smaller": small.name,
                                   "loss_larger": ll.loss, "loss_smaller": ls.loss, "validation_batches": n,
                                   "full_fraction": high.fraction, "full_fraction_diff": full[0] if full else None,
                                   "full_fraction_interval": full[1] if full else None, "epochs": epochs}))
    if not parts:
        return nm("no group of finished points differs only in data.fraction; run the missing points")
    status = combine(p.status for p in parts)
    decided = next((p for p in parts if p.interval is not None), parts[0])
    reasons = [f"{p.name}: {p.reason}" for p in parts if p.status == NOT_MEASURED]
    return Claim(status=status, reason="; ".join(reasons) if status == NOT_MEASURED else None,
                 evidence=" ".join(f"{p.name}: {p.evidence}" for p in parts),
                 estimate=decided.estimate, interval=decided.interval,
                 interval_method=INTERVAL_METHOD if decided.interval else None,
                 compared={"larger": str(decided.numbers.get("larger")), "smaller": str(decided.numbers.get("smaller"))},
                 parts=parts, **base)
