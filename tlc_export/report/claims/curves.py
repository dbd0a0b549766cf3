"""Claims 1 and 2, from the pretraining curves: larger models reach a lower validation loss in the
same wall-clock time (Figure 2, left) and at the same number of steps (Figure 3).

Every size is evaluated on the same fixed validation batches with the same masks. When a curve
point records each batch's summed masked-token loss and token count (`val_loss_sums`,
`val_token_counts`), the difference of two sizes' losses gets a paired t-interval (n − 1 df)
over those batches (a percentile bootstrap over 6–20 batches rejects 8–13 % of the time with no
effect, the t-interval holds 5 %: tests/unit/test_calibration.py); between two evaluations a batch's summed loss is interpolated linearly, like the
curve itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlc_export.report.claims.card import Claim
from tlc_export.report.claims.replicates import (
    BATCHES,
    NO_BATCHES,
    Contrast,
    Term,
    contrast,
    interval_method,
)
from tlc_export.report.claims.rules import (
    MIN_BATCHES,
    NOT_MEASURED,
    decide_difference,
    difference_rule,
)
from tlc_export.report.claims.sizes import Size

INTERVAL_METHOD = ("paired t-interval over the validation batches (each batch's share of the loss difference, both "
                   "sizes scored on the same batches; n − 1 degrees of freedom), 95 %")
Curves = dict[str, list[dict[str, Any]]]
_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
_MAX_EXACT_POINTS = 6
_MIN_EXACT_POINTS = 3


def point_loss(p: dict[str, Any]) -> float | None:
    """Mean masked-LM validation loss of a curve point (older curves only have the perplexity)."""
    if p.get("val_loss") is not None:
        return float(p["val_loss"])
    if p.get("val_ppl"):
        return math.log(float(p["val_ppl"]))
    return None


def point_batches(p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    s, c = p.get("val_loss_sums"), p.get("val_token_counts")
    if not s or not c or len(s) != len(c):
        return None
    return np.asarray(s, dtype=np.float64), np.asarray(c, dtype=np.float64)


@dataclass
class At:
    """One size's curve at x: recorded there (`exact`) or interpolated between two evaluations."""

    x: float
    loss: float
    sums: np.ndarray | None
    counts: np.ndarray | None
    lr: float | None
    exact: bool


def _points(curve: Sequence[dict[str, Any]], axis: str) -> list[dict[str, Any]]:
    pts = [p for p in curve if p.get(axis) is not None and point_loss(p) is not None]
    return sorted(pts, key=lambda p: float(p[axis]))


def curve_at(curve: Sequence[dict[str, Any]], axis: str, x: float) -> At | None:
    """The curve at `x` on `axis` ("elapsed_s" or "step"); None outside the evaluated range."""
    pts = _points(curve, axis)
    if not pts or x < float(pts[0][axis]) - 1e-9 or x > float(pts[-1][axis]) + 1e-9:
        return None
    for p in pts:
        if abs(float(p[axis]) - x) <= 1e-9:
            b = point_batches(p)
            return At(x, point_loss(p) or 0.0, b[0] if b else None, b[1] if b else None, p.get("lr"), True)
    i = next(i for i in range(1, len(pts)) if float(pts[i][axis]) > x)
    a, b = pts[i - 1], pts[i]
    w = (x - float(a[axis])) / (float(b[axis]) - float(a[axis]))
    loss = (1 - w) * (point_loss(a) or 0.0) + w * (point_loss(b) or 0.0)
    lr = (1 - w) * a["lr"] + w * b["lr"] if a.get("lr") is not None and b.get("lr") is not None else None
    ba, bb = point_batches(a), point_batches(b)
    sums = counts = None
    if ba and bb and ba[0].size == bb[0].size and np.array_equal(ba[1], bb[1]):
        sums, counts = (1 - w) * ba[0] + w * bb[0], ba[1]
    return At(x, loss, sums, counts, lr, False)


Diff = Contrast  # largest − smallest size's validation loss at one point, with its interval when it has one


def _term(at: At, sign: float, label: str) -> Term:
    return Term(sign, at.loss, at.sums, at.counts, label)


def loss_diff(small: At, large: At) -> Diff:
    """Largest − smallest on one seed, paired over its validation batches."""
    return contrast([[_term(large, 1.0, "the larger size"), _term(small, -1.0, "the smaller size")]])


def seeds_diff(pairs: Sequence[tuple[At, At]]) -> Diff:
    """Largest − smallest over seeds: `pairs` holds each seed's (small, large); one pair: over batches."""
    return contrast([[_term(large, 1.0, "the larger size"), _term(small, -1.0, "the smaller size")]
                     for small, large in pairs])


def _fmt_d(d: Diff) -> str:
    iv = f" [{d.interval[0]:+.3f}, {d.interval[1]:+.3f}]" if d.interval else ""
    return f"{d.estimate:+.3f}{iv}"


def _no_batches_reason(sizes: Sequence[Size]) -> str:
    names = ", ".join(s.name for s in sizes)
    return (f"the curves of {names} record no per-batch validation losses (val_loss_sums, val_token_counts), so "
            "the losses carry no interval; rerun the pretrain stage with a tlc that records them")


def _few_batches_reason(n: int) -> str:
    return (f"only {n} validation batches per evaluation; an interval needs at least {MIN_BATCHES}: raise "
            f"pretrain.eval_batches to {MIN_BATCHES} or more")


def _too_few_sizes(have: Sequence[Size], sizes: Sequence[Size]) -> str:
    if not have:
        return "no pretraining curves in this run (pretrain/<size>/curves.jsonl); run the pretrain stage"
    if len(sizes) < 2:
        return f"the recipe has one size ({have[0].name}); the claim compares sizes: add one to models.sizes"
    return f"only {have[0].name} has a pretraining curve; the claim compares sizes: rerun the pretrain stage"


def _status(d: Diff, small: Size, large: Size) -> tuple[str, str | None]:
    if d.interval is None:
        if d.why_no_interval == NO_BATCHES:
            return NOT_MEASURED, _no_batches_reason([small, large])
        if d.unit == BATCHES and d.units is not None and d.units < MIN_BATCHES:
            return NOT_MEASURED, _few_batches_reason(d.units)
        return NOT_MEASURED, f"no interval: {d.why_no_interval}"
    return decide_difference(d.interval[0], d.interval[1], "lower"), None


def _replicas(curves: Curves, replicas: Sequence[Curves], have: Sequence[Size], axis: str) -> list[Curves]:
    """Every seed's curves that cover each size in `have` (the main seed first)."""
    return [curves] + [r for r in replicas if all(_points(r.get(s.name, []), axis) for s in have)]


def _numbers_for(d: Diff) -> dict[str, Any]:
    out: dict[str, Any] = {"validation_batches": d.units if d.unit == BATCHES else None, "seeds": d.seeds}
    if d.seeds > 1:
        out["per_seed_diff"] = d.per_seed
    return out


def _sizes_with_curves(sizes: Sequence[Size], curves: dict[str, list[dict[str, Any]]], axis: str) -> list[Size]:
    return [s for s in sizes if _points(curves.get(s.name, []), axis)]


def claim_wallclock(sizes: Sequence[Size], curves: Curves, budget_s: float | None = None,
                    replicas: Sequence[Curves] = ()) -> Claim:
    """Claim 1: final validation loss after the same training time, and at matched times along the curves."""
    axis = "elapsed_s"
    have = _sizes_with_curves(sizes, curves, axis)
    base = {"number": 1, "key": "wallclock-loss", "figure": "Figure 2 (left)",
            "claim": "Larger models reach a lower validation loss in the same wall-clock time",
            "rule": difference_rule("the final validation loss (mean masked-LM loss, nats)", "lower") +
            f" Needs per-batch validation losses from at least {MIN_BATCHES} batches.",
            "metric": "Δ final validation loss, largest − smallest size (nats)", "unit": "nats",
            "sources": [f"pretrain/{s.name}/curves.jsonl" for s in have]}
    if len(have) < 2:
        reason = _too_few_sizes(have, sizes)
        return Claim(status=NOT_MEASURED, reason=reason, evidence=reason, **base)
    small, large = have[0], have[-1]
    finals = {s.name: _points(curves[s.name], axis)[-1] for s in have}
    per_size = [{"model": s.name, "params": s.params, "elapsed_s": finals[s.name].get("elapsed_s"),
                 "step": finals[s.name].get("step"), "tokens": finals[s.name].get("tokens"),
                 "val_loss": point_loss(finals[s.name]), "val_ppl": math.exp(min(point_loss(finals[s.name]) or 0.0, 700.0))}
                for s in have]
    best = min(per_size, key=lambda r: r["val_loss"])
    end = {s.name: curve_at(curves[s.name], axis, float(finals[s.name][axis])) for s in have}
    seeds = _replicas(curves, replicas, [small, large], axis)

    def at_end(c: Curves, s: Size) -> At:
        return curve_at(c[s.name], axis, float(_points(c[s.name], axis)[-1][axis]))  # type: ignore[return-value]

    final = seeds_diff([(at_end(c, small), at_end(c, large)) for c in seeds])
    status, reason = _status(final, small, large)
    for r, s in zip(per_size[1:], have[1:], strict=True):  # every larger size against the smallest, paired
        d = loss_diff(end[small.name], end[s.name])  # type: ignore[arg-type]
        r["minus_smallest"], r["minus_smallest_interval"] = d.estimate, d.interval

    t_hi = min(float(finals[s.name][axis]) for s in have)
    t_lo = max(float(_points(curves[s.name], axis)[0][axis]) for s in have)
    matched = []
    for f in _FRACTIONS:
        t = t_hi * f
        if t < t_lo or t <= 0:
            continue
        ats = {s.name: curve_at(curves[s.name], axis, t) for s in have}
        if any(a is None for a in ats.values()):
            continue
        d = loss_diff(ats[small.name], ats[large.name])  # type: ignore[arg-type]
        matched.append({"elapsed_s": round(t, 3), "val_loss": {k: a.loss for k, a in ats.items() if a},
                        "leader": min(ats, key=lambda k: ats[k].loss),  # type: ignore[union-attr]
                        "diff": d.estimate, "interval": d.interval})
    losses = ", ".join(f"{r['model']} {r['val_loss']:.3f} (ppl {r['val_ppl']:,.0f})" for r in per_size)
    budget = f"the same {budget_s:g} s budget" if budget_s else "the same training time"
    along = "; ".join(f"{m['elapsed_s']:.4g} s: {m['diff']:+.3f} (lowest {m['leader']})" for m in matched)
    over = (f" over {final.seeds} pretraining seeds (per seed: " + ", ".join(f"{x:+.3f}" for x in final.per_seed) + ")"
            if final.seeds > 1 else "")
    evidence = (f"Final validation loss after {budget}: {losses}; lowest: {best['model']}. "
                f"{large.name} − {small.name}: {_fmt_d(final)} nats{over}."
                + (f" At matched wall-clock points, {large.name} − {small.name}: {along}." if along else ""))
    return Claim(status=status, reason=reason, evidence=evidence, estimate=final.estimate, interval=final.interval,
                 interval_method=interval_method(final) if final.interval else None,
                 compared={"larger": large.name, "smaller": small.name}, seeds=final.seeds,
                 numbers={"final": per_size, "lowest_final_loss": best["model"], **_numbers_for(final),
                          "matched_wallclock": matched}, **base)


def _exact_common_steps(curves: dict[str, list[dict[str, Any]]], have: Sequence[Size], hi: float) -> list[float]:
    sets = [{float(p["step"]) for p in _points(curves[s.name], "step")} for s in have]
    common = sorted(x for x in set.intersection(*sets) if 0 < x <= hi)
    if len(common) > _MAX_EXACT_POINTS:  # evenly thinned, keeping the last
        idx = np.linspace(0, len(common) - 1, _MAX_EXACT_POINTS).round().astype(int)
        common = [common[i] for i in sorted(set(idx))]
    return common


def claim_steps(sizes: Sequence[Size], curves: Curves, replicas: Sequence[Curves] = ()) -> Claim:
    """Claim 2: validation loss at the same number of optimizer steps, over the range every size reached."""
    axis = "step"
    have = _sizes_with_curves(sizes, curves, axis)
    base = {"number": 2, "key": "step-loss", "figure": "Figure 3",
            "claim": "Larger models are more sample-efficient: lower validation loss at the same number of steps (tokens)",
            "rule": difference_rule("the validation loss at the last step every size reached (interpolated linearly "
                                    "between evaluations where a size has none there)", "lower") +
            f" Needs per-batch validation losses from at least {MIN_BATCHES} batches.",
            "metric": "Δ validation loss at the last common step, largest − smallest size (nats)", "unit": "nats",
            "sources": [f"pretrain/{s.name}/curves.jsonl" for s in have]}
    if len(have) < 2:
        reason = _too_few_sizes(have, sizes)
        return Claim(status=NOT_MEASURED, reason=reason, evidence=reason, **base)
    small, large = have[0], have[-1]
    s_hi = min(float(_points(curves[s.name], axis)[-1][axis]) for s in have)
    s_lo = max(float(_points(curves[s.name], axis)[0][axis]) for s in have)
    ats = {s.name: curve_at(curves[s.name], axis, s_hi) for s in have}
    if s_hi < s_lo or any(a is None for a in ats.values()):
        why = f"the curves share no range of steps (every size's evaluations span steps {s_lo:g}..{s_hi:g})"
        return Claim(status=NOT_MEASURED, reason=why, evidence=why, **base)
    pairs = []
    for c in _replicas(curves, replicas, [small, large], axis):
        hi_c = min(float(_points(c[s.name], axis)[-1][axis]) for s in (small, large))
        a_s, a_l = curve_at(c[small.name], axis, hi_c), curve_at(c[large.name], axis, hi_c)
        if a_s is not None and a_l is not None:
            pairs.append((a_s, a_l))
    final = seeds_diff(pairs) if len(pairs) > 1 else loss_diff(ats[small.name], ats[large.name])  # type: ignore[arg-type]
    status, reason = _status(final, small, large)
    if s_hi <= 0:
        reason = "every size stopped before its first optimizer step was evaluated; lengthen pretrain.time_budget_s"
        status = NOT_MEASURED

    exact = _exact_common_steps(curves, have, s_hi)
    if len(exact) < _MIN_EXACT_POINTS:  # a step or two shared by chance is not a step grid
        exact = []
    grid = exact or [s_hi * f for f in _FRACTIONS if s_hi * f >= s_lo and s_hi * f > 0]
    matched = []
    for x in grid:
        pts = {s.name: curve_at(curves[s.name], axis, x) for s in have}
        if any(a is None for a in pts.values()):
            continue
        d = loss_diff(pts[small.name], pts[large.name])  # type: ignore[arg-type]
        matched.append({"step": round(x, 2), "exact": all(a.exact for a in pts.values() if a),
                        "val_loss": {k: a.loss for k, a in pts.items() if a},
                        "leader": min(pts, key=lambda k: pts[k].loss),  # type: ignore[union-attr]
                        "diff": d.estimate, "interval": d.interval})
    tokens_per_step = None
    fin_large = _points(curves[large.name], axis)[-1]
    if fin_large.get("tokens") and fin_large.get("step"):
        tokens_per_step = float(fin_large["tokens"]) / float(fin_large["step"])
    at_txt = ", ".join(f"{k} {a.loss:.3f}{'' if a.exact else ' (interpolated)'}" for k, a in ats.items() if a)
    tok_txt = f" (= {s_hi * tokens_per_step:,.0f} tokens)" if tokens_per_step else ""
    lrs = {k: a.lr for k, a in ats.items() if a and a.lr is not None}
    lr_txt = ", ".join(f"{k} {v:.2g}" for k, v in lrs.items())
    note = ("Equal steps are not equal schedules: each size's learning rate warms up and decays to 0 over its own "
            "wall-clock budget, so at the same step the sizes are at different points of their schedules"
            + (f" (lr at step {s_hi:g}: {lr_txt})" if lr_txt else "") + ".")
    grid_note = ("Matched steps along the range are evaluations every size made at the same step (a step grid), "
                 "not interpolations." if exact else
                 "The sizes were not evaluated at common steps (a wall-clock evaluation grid), so matched steps are "
                 "interpolated linearly between each size's evaluations; pretrain.eval_every_steps evaluates every "
                 "size at the same steps.")
    along = "; ".join(f"step {m['step']:.4g}: {m['diff']:+.3f} (lowest {m['leader']})" for m in matched)
    over = (f" over {final.seeds} pretraining seeds, each at its own last common step (per seed: "
            + ", ".join(f"{x:+.3f}" for x in final.per_seed) + ")" if final.seeds > 1 else "")
    evidence = (f"At step {s_hi:g}{tok_txt}, the last every size reached: {at_txt}. {large.name} − {small.name}: "
                f"{_fmt_d(final)} nats{over}." + (f" Along the common range: {along}." if along else ""))
    return Claim(status=status, reason=reason, evidence=evidence, estimate=final.estimate, interval=final.interval,
                 interval_method=interval_method(final) if final.interval else None,
                 compared={"larger": large.name, "smaller": small.name}, seeds=final.seeds,
                 numbers={"last_common_step": s_hi, "tokens_per_step": tokens_per_step,
                          "val_loss_at_last_common_step": {k: a.loss for k, a in ats.items() if a},
                          "interpolated": [k for k, a in ats.items() if a and not a.exact],
                          "lr_at_last_common_step": lrs, **_numbers_for(final),
                          "step_grid": bool(exact), "matched_steps": matched},
                 notes=[note, grid_note], **base)
