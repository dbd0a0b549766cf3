"""Claims 6 and 7, measured across the points of a sweep (a single run says why it cannot).

6. "Model size beats batch size in wall-clock" (§3, Figure 13, Table 1): under the same budget,
   growing the model lowers the validation loss more than growing the batch size of the smaller
   model. One part per starting batch b (every swept batch size with a larger one): the largest
   size at b (its best learning rate) against the smallest size at *every* batch larger than b (and
   every learning rate): d_b = the largest size's loss − the best of those. The part holds when the
   largest size beats every one of them (each interval below 0: an intersection-union test, which
   keeps 5 % without a correction; testing only against the best one, picked on the same batches,
   would not), does not hold when every one beats it. When the largest size has k learning rates at
   b, its best is picked and each interval is at 1 − 0.05/k (Bonferroni). The paper grows the batch
   up to the critical batch size and the model after it (Figure 13), so the part that starts at the
   largest such b decides; the parts from smaller batches are evidence.
7. "Larger models overfit small data" (§5.1, Figure 14): at the smallest data fraction the largest
   size ends with a higher validation loss than the *best* smaller size (the paper: at 1 % the
   largest overfits while 12 layers still beat 3). "Worse than the best" is "worse than at least
   one", a union: each of the J comparisons is at 1 − 0.05/J (Bonferroni), and the part holds when
   any lies above 0, does not hold when every one lies below 0 (better than every smaller size). A
   second part asks whether the largest size's advantage over the smallest shrinks as the data
   fraction falls: the interaction (L − S) at the smallest fraction − (L − S) at the largest, holds
   when its interval is above 0 (S fixed in advance: choosing the best smaller size on the same
   batches biased it). The overfit part decides
   the claim; the group with the most fractions decides when there are several.

Every comparison is of final validation losses on the same validation batches, with a t-interval
over those batches (one pretraining seed: "indicative") or over the pretraining seeds
(`claims.replicates`); points scored on different batches (a different `pretrain.eval_batch_size`,
`eval_batches` or seed) are not compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tlc_export.report.claims.card import Claim, Part
from tlc_export.report.claims.curves import point_batches, point_loss
from tlc_export.report.claims.replicates import Contrast, Term, contrast, interval_method
from tlc_export.report.claims.rules import (
    ALPHA,
    HOLDS,
    MIN_BATCHES,
    NOISE,
    NOT_MEASURED,
    decide_all,
    decide_any,
    decide_difference,
)
from tlc_export.report.claims.sizes import Size

BATCH = "pretrain.batch_size"
LR = "pretrain.lr"
FRACTION = "data.fraction"

SIZE_VS_BATCH = {"number": 6, "key": "size-beats-batch", "figure": "Figure 13, Table 1",
                 "claim": "Increasing model size beats increasing batch size in wall-clock time"}
OVERFIT = {"number": 7, "key": "overfit-small-data", "figure": "Figure 14",
           "claim": "Larger models overfit small data: with a small fraction of the corpus they end with a higher "
                    "validation loss than smaller models"}
_RULE6 = ("Per starting batch size b (each swept batch size with a larger one): the largest size at b (its best "
          "learning rate) against the smallest size at every larger batch size and learning rate, each on the same "
          "validation batches with its 95 % interval (1 − 0.05/k when the largest size has k learning rates at b); "
          "d_b = its loss − the best of them. Holds when every interval is below 0 (the bigger model beat every "
          "bigger batch), does not hold when every one is above 0, within noise otherwise. The part starting at the "
          "largest such b decides (the paper grows the batch up to the critical batch size, then the model); the "
          "other parts are evidence. Points differing in other swept fields than batch size and learning rate are "
          "compared only within their group; the group with the largest data.fraction decides. Intervals are over "
          f"the pretraining seeds when there are two or more, else over at least {MIN_BATCHES} validation batches.")
_RULE7 = ("At the smallest data fraction of a group of points that differ only in data.fraction: the largest size's "
          "final validation loss against every smaller size's, each with its interval at 1 − 0.05/J for J smaller "
          "sizes (Bonferroni); d = the largest's loss − the best smaller size's. Holds when some interval is above 0 "
          "(the largest overfits: worse than the best smaller size), does not hold when every one is below 0, within "
          "noise otherwise. Shown beside it, decided on its own: whether the largest size's advantage over the smallest "
          "size shrinks as the fraction falls (interaction, holds when its interval is above 0). The group with the "
          "most fractions decides. Intervals are over the pretraining seeds when there are two or more, else over at least "
          f"{MIN_BATCHES} validation batches.")


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
    replicas: list[dict[str, dict[str, Any]]] = field(default_factory=list)  # further pretraining seeds' finals

    def seed_finals(self) -> list[dict[str, dict[str, Any]]]:
        return [self.finals, *self.replicas]

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
    loss: float  # the main seed's final loss
    terms: list[Term]  # one per pretraining seed that has this size's final point

    @property
    def label(self) -> str:
        return f"{self.size.name}@{self.point.id}"


def _loss(p: PointRun, size: Size) -> _Loss | None:
    terms = []
    for finals in p.seed_finals():
        fin = finals.get(size.name)
        if fin is None:
            break
        loss = point_loss(fin)
        if loss is None or not math.isfinite(loss):
            break
        b = point_batches(fin)
        terms.append(Term(1.0, loss, b[0] if b else None, b[1] if b else None, f"{size.name}@{p.id}"))
    if not terms:
        return None
    return _Loss(p, size, terms[0].loss, terms)


def _contrast(parts: list[tuple[float, _Loss]], confidence: float = 1 - ALPHA) -> Contrast:
    """Σ sign·loss over the seeds every `_Loss` has (paired seed by seed), or one seed's batches."""
    seeds = min(len(x.terms) for _, x in parts)
    reps = [[Term(sign, x.terms[k].loss, x.terms[k].sums, x.terms[k].counts, x.label) for sign, x in parts]
            for k in range(seeds)]
    return contrast(reps, confidence)


def _paired(a: _Loss, b: _Loss, confidence: float = 1 - ALPHA) -> tuple[float, tuple[float, float] | None, Contrast]:
    """a − b with its interval (None when there is none; the contrast says why)."""
    c = _contrast([(1.0, a), (-1.0, b)], confidence)
    why = c.why_no_interval
    if why and "different validation batches" in why:
        c.why_no_interval = (f"{a.point.id} and {b.point.id} were scored on different validation batches; give every "
                             "point the same pretrain.eval_batch_size, eval_batches and seed")
    elif why and "per-batch" in why:
        c.why_no_interval = "the curves record no per-batch validation losses; rerun the pretrain stage"
    return c.estimate, c.interval, c


def _shown(comparisons: list[tuple[_Loss, Contrast]], status: str) -> tuple[_Loss, Contrast]:
    """The comparison a part shows: against the best competitor, or one that is in the noise when the part is."""
    best = min(comparisons, key=lambda x: x[0].loss)
    if status == NOISE and best[1].interval and (best[1].interval[0] > 0 or best[1].interval[1] < 0):
        return next((x for x in comparisons if x[1].interval and x[1].interval[0] <= 0 <= x[1].interval[1]), best)
    return best


def _units(c: Contrast) -> dict[str, Any]:
    return {"validation_batches": c.units if c.seeds == 1 else None, "seeds": c.seeds,
            **({"per_seed_diff": c.per_seed} if c.seeds > 1 else {})}


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
        conf = 1 - ALPHA / len(at_b0)
        comps = [(b, _paired(a, b, conf)[2]) for b in larger]
        missing = next((c for _, c in comps if c.interval is None), None)
        status = NOT_MEASURED if missing else decide_all([c.interval for _, c in comps], "lower")  # type: ignore[misc]
        b, shown = _shown(comps, status) if not missing else (min(larger, key=lambda x: x.loss), missing)
        d, iv = shown.estimate, shown.interval
        gain_size = gain_batch = None
        if small_b0:
            s0 = min(small_b0, key=lambda x: x.loss)
            best_b = min(larger, key=lambda x: x.loss)
            gain_size, gain_batch = s0.loss - a.loss, s0.loss - best_b.loss
        gains = (f"from {small.name} at batch {b0}, growing the model to {large.name} lowers the loss by "
                 f"{gain_size:.3f}, the best larger batch by {gain_batch:.3f} nats; "
                 if gain_size is not None else "")
        against = (f" (against each of the {len(comps)} larger-batch points of {small.name}: "
                   + ", ".join(f"{x.point.id} {_fmt(c.estimate, c.interval)}" for x, c in comps) + ")"
                   if len(comps) > 1 else "")
        parts.append(Part(name, status,
                          f"{gains}{large.name}@batch {b0} − {small.name}@batch {b.point.batch_size}: {_fmt(d, iv)} nats"
                          f"{against}.",
                          reason=missing.why_no_interval if missing else None, estimate=d, interval=iv,
                          numbers={"smallest_batch": b0, "best_larger_batch": b.point.batch_size,
                                   "larger": f"{large.name} @ batch {b0} ({a.point.id})",
                                   "smaller": f"{small.name} @ batch {b.point.batch_size} ({b.point.id})",
                                   "gain_from_size": gain_size, "gain_from_batch": gain_batch,
                                   "confidence_each": conf, **_units(shown)}))
    measured = [p for p in parts if p.estimate is not None]
    if not measured:
        return nm("a final validation loss is missing (or not finite) for the compared points")
    decider = measured[-1]  # the largest starting batch: past the critical batch size, where the paper's claim is made
    status = decider.status
    evidence = (f"Final validation loss after the same budget at data.fraction {group[0].fraction:g}: {listing}. "
                + " ".join(f"{p.name}{' (decides)' if p is decider else ''}: {p.evidence}" for p in parts))
    seeds = int(decider.numbers.get("seeds") or 1)
    return Claim(status=status, reason=decider.reason if status == NOT_MEASURED else None, evidence=evidence,
                 estimate=decider.estimate, interval=decider.interval, seeds=seeds,
                 interval_method=_method(seeds, decider) if decider.interval else None,
                 compared={"larger": str(decider.numbers["larger"]), "smaller": str(decider.numbers["smaller"])},
                 numbers={"final_loss": table, **{k: decider.numbers.get(k) for k in (
                     "smallest_batch", "best_larger_batch", "gain_from_size", "gain_from_batch", "validation_batches",
                     "seeds", "per_seed_diff")}},
                 parts=parts,
                 notes=["The larger model must beat the smaller one at every larger batch size, not only at the best "
                        "one: an intersection-union test, which keeps the 5 % error rate of each comparison.",
                        "Parts from smaller starting batches are evidence, not the decision: below the critical batch "
                        "size the paper itself grows the batch first (Figure 13)."], **base)


def _method(seeds: int, part: Part) -> str:
    c = Contrast(0.0, None, part.numbers.get("validation_batches"), "", seeds)
    c.unit = "pretraining seeds" if seeds > 1 else "validation batches"
    return interval_method(c)


def _overfit_group(g: list[PointRun]) -> list[Part]:
    """The overfit part (decides) and the shrinking-advantage part of one group of points."""
    g = sorted(g, key=lambda p: p.fraction)
    low, high = g[0], g[-1]
    sizes = _common_sizes(g)
    if len(sizes) < 2:
        why = "fewer than two common sizes"
        return [Part("overfit", NOT_MEASURED, why, reason=why)]
    large, smaller = sizes[-1], sizes[:-1]
    ll = _loss(low, large)
    ls = [x for x in (_loss(low, s) for s in smaller) if x is not None]
    if ll is None or len(ls) < len(smaller):
        why = f"a final validation loss is missing at data.fraction {low.fraction:g}"
        return [Part("overfit", NOT_MEASURED, why, reason=why)]
    conf = 1 - ALPHA / len(ls)  # "worse than the best smaller size" = worse than at least one: Bonferroni
    comps = [(x, _paired(ll, x, conf)[2]) for x in ls]
    missing = next((c for _, c in comps if c.interval is None), None)
    status = NOT_MEASURED if missing else decide_any([c.interval for _, c in comps], "higher")  # type: ignore[misc]
    best, shown = min(comps, key=lambda x: x[0].loss)
    if status == HOLDS and not (shown.interval and shown.interval[0] > 0):  # show a comparison that decided
        best, shown = next(x for x in comps if x[1].interval and x[1].interval[0] > 0)
    epochs = {s.name: low.epochs.get(s.name) for s in (best.size, large)}
    ep = ", ".join(f"{k} {v:.1f}" for k, v in epochs.items() if v is not None)
    others = (" (against each smaller size: " + ", ".join(f"{x.size.name} {_fmt(c.estimate, c.interval)}"
                                                         for x, c in comps) + ")") if len(comps) > 1 else ""
    ev = (f"at data.fraction {low.fraction:g}: {large.name} {ll.loss:.3f} vs the best smaller size {best.size.name} "
          f"{best.loss:.3f}, d = {_fmt(shown.estimate, shown.interval)} nats{others}"
          + (f" (epochs seen: {ep})" if ep else "") + ".")
    overfit = Part("overfit", status, ev, reason=missing.why_no_interval if missing else None,
                   estimate=shown.estimate, interval=shown.interval,
                   numbers={"fraction": low.fraction, "larger": large.name, "smaller": best.size.name,
                            "loss_larger": ll.loss, "loss_smaller": best.loss, "epochs": epochs,
                            "confidence_each": conf, **_units(shown)})
    # Does the large model's advantage shrink as the data falls? Against the smallest size: a comparison fixed
    # in advance (picking the best smaller size on the same batches biased this part: 6.3 % false positives).
    hl, s_high = _loss(high, large), _loss(high, smaller[0])
    if hl is None or s_high is None:
        why = f"a final validation loss is missing at data.fraction {high.fraction:g}"
        return [overfit, Part("advantage shrinks", NOT_MEASURED, why, reason=why)]
    s_low = next(x for x in ls if x.size.name == s_high.size.name)
    inter = _contrast([(1.0, ll), (-1.0, s_low), (-1.0, hl), (1.0, s_high)])
    iv = inter.interval
    at_high = hl.loss - s_high.loss
    at_low = ll.loss - s_low.loss
    ev2 = (f"{large.name} − {s_high.size.name}: {at_high:+.3f} nats at data.fraction {high.fraction:g}, {at_low:+.3f} at "
           f"{low.fraction:g}; the change (interaction) {_fmt(inter.estimate, iv)}.")
    shrink = Part("advantage shrinks", decide_difference(iv[0], iv[1], "higher") if iv else NOT_MEASURED, ev2,
                  reason=None if iv else inter.why_no_interval, estimate=inter.estimate, interval=iv,
                  numbers={"smaller": s_high.size.name, "larger": large.name, "diff_at_full_fraction": at_high,
                           "diff_at_small_fraction": at_low, "full_fraction": high.fraction,
                           "small_fraction": low.fraction, **_units(inter)})
    return [overfit, shrink]


def claim_overfit(points: Sequence[PointRun]) -> Claim:
    base = {**OVERFIT, "rule": _RULE7,
            "metric": "Δ final validation loss at the smallest data fraction, largest − best smaller size (nats)",
            "sources": [f"points/{p.id}/pretrain/<size>/curves.jsonl" for p in points]}

    def nm(why: str) -> Claim:
        return Claim(status=NOT_MEASURED, reason=why, evidence=why, **base)

    if len({p.fraction for p in points}) < 2:
        return nm("the sweep's finished points share one data.fraction; sweep it (recipes/ablation-data.yaml)")
    groups: dict[Any, list[PointRun]] = {}
    for p in points:
        groups.setdefault(p.group({FRACTION}), []).append(p)
    usable = [g for g in groups.values() if len({p.fraction for p in g}) >= 2]
    if not usable:
        return nm("no group of finished points differs only in data.fraction; run the missing points")
    deciding = max(usable, key=lambda g: (len({p.fraction for p in g}), -usable.index(g)))
    parts: list[Part] = []
    for g in [deciding] + [g for g in usable if g is not deciding]:
        name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in g[0].values.items() if k != FRACTION) or "all points"
        for part in _overfit_group(g):
            part.name = f"{name}: {part.name}" + (" (decides)" if g is deciding and part.name == "overfit" else "")
            parts.append(part)
    decider = parts[0]
    status = decider.status
    seeds = int(decider.numbers.get("seeds") or 1)
    return Claim(status=status, reason=decider.reason if status == NOT_MEASURED else None,
                 evidence=" ".join(f"{p.name}: {p.evidence}" for p in parts),
                 estimate=decider.estimate, interval=decider.interval, seeds=seeds,
                 interval_method=_method(seeds, decider) if decider.interval else None,
                 compared=({"larger": str(decider.numbers.get("larger")), "smaller": str(decider.numbers.get("smaller"))}
                           if decider.numbers.get("larger") else None),
                 parts=parts, **base)
