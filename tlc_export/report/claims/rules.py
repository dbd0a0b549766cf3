"""The decision rules of the claims card, written once: every claim's status comes from here.

A claim of the paper says "larger is better" about some measured quantity. It is checked by
comparing the largest size of the run with the smallest on the same evaluation units (validation
batches, test examples), as a difference d = larger − smaller with a 95 % interval; the interval,
not the point estimate, decides. Statuses:

- "holds": the whole interval lies on the side the paper claims;
- "does not hold": the whole interval lies on the other side;
- "within noise": the interval contains 0: this run cannot tell;
- "not measured": an input is missing (the reason says which and how to get it).

A status decided from one pretraining seed is labelled "one seed: indicative": its interval covers
the evaluation noise of this seed's models (batches, examples), not the seed-to-seed variation.
With `pretrain.seeds` of two or more, claims 1, 2, 6 and 7 take their interval over the seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

ALPHA = 0.05
HOLDS = "holds"
FAILS = "does not hold"
NOISE = "within noise"
NOT_MEASURED = "not measured"
STATUSES = (HOLDS, FAILS, NOISE, NOT_MEASURED)
INDICATIVE = "one seed: indicative"  # the label of a status decided from one pretraining seed

MULTIPLICITY = ("Multiple comparisons: each claim is tested at 95 % with no correction, so with no real effect "
                "anywhere each is decided by chance in up to 5 % of runs, and a card of five to seven claims shows "
                "at least one such chance decision in up to 23–30 % of runs; read a lone decided claim with that in mind.")

STABLE = "stable"
UNSTABLE = "unstable"
NOT_COMPARED = "not compared"

# The t-interval over batches holds its level for any n >= 2 when batch differences are roughly
# normal; below 6 it leans on that assumption alone (no sign test could reject: 2 · 0.5^5 > 0.05).
MIN_BATCHES = 6

Better = Literal["lower", "higher"]


def decide_difference(lo: float, hi: float, better: Better) -> str:
    """Status of "larger is better" from the interval [lo, hi] of d = larger − smaller.

    `better` is the direction the paper claims for d: "lower" for a loss or an error (the larger
    model's is smaller), "higher" for an accuracy.
    """
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"not an interval: [{lo}, {hi}]")
    if better == "lower":
        good, bad = hi < 0, lo > 0
    elif better == "higher":
        good, bad = lo > 0, hi < 0
    else:
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    return HOLDS if good else FAILS if bad else NOISE


def decide_all(intervals: Iterable[tuple[float, float]], better: Better) -> str:
    """One status from several comparisons that must all go one way (an intersection-union test).

    "Larger beats the best of the others" means larger beats every other: it holds when every
    interval lies on the claimed side, does not hold when every one lies on the other side, and is
    within noise otherwise. Each comparison at 95 % keeps the whole decision's error rate at 5 %:
    picking the best competitor on the same batches and testing only against it would not.
    """
    statuses = [decide_difference(lo, hi, better) for lo, hi in intervals]
    if not statuses:
        raise ValueError("decide_all needs at least one interval")
    if all(s == HOLDS for s in statuses):
        return HOLDS
    if all(s == FAILS for s in statuses):
        return FAILS
    return NOISE


def decide_any(intervals: Iterable[tuple[float, float]], better: Better) -> str:
    """One status for "larger is on the claimed side of *some* competitor" (claim 7: the largest size is
    worse than the best smaller one, i.e. worse than at least one).

    That is a union, so each interval must be at 1 − alpha/J for J competitors (Bonferroni): it holds
    when any interval lies on the claimed side, does not hold when every one lies on the other side
    (an intersection, which needs no correction, so this side is conservative), within noise otherwise.
    """
    statuses = [decide_difference(lo, hi, better) for lo, hi in intervals]
    if not statuses:
        raise ValueError("decide_any needs at least one interval")
    if any(s == HOLDS for s in statuses):
        return HOLDS
    if all(s == FAILS for s in statuses):
        return FAILS
    return NOISE


def difference_rule(metric: str, better: Better) -> str:
    """The words of `decide_difference` for one metric, shown in the card's rule column."""
    side, other = ("below", "above") if better == "lower" else ("above", "below")
    return (f"d = {metric} of the largest size − the same of the smallest, with its 95 % interval; "
            f"holds when the whole interval is {side} 0, does not hold when it is wholly {other} 0, "
            "within noise when it contains 0.")


def status_from_outcome(outcome: str | None) -> str:
    """A paired comparison's outcome for the larger model ("won" / "lost" / "within noise") as a status."""
    return {"won": HOLDS, "lost": FAILS, "within noise": NOISE}.get(outcome or "", NOT_MEASURED)


COMBINE_RULE = ("Each part is decided on its own; the claim holds when every measured part holds, does "
                "not hold when any measured part does not hold, and is within noise otherwise. A part "
                "that could not be measured is named with its reason and left out.")


def combine(statuses: Iterable[str]) -> str:
    """One status for a claim measured in several parts (e.g. 4-bit quantization and pruning)."""
    measured = [s for s in statuses if s != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    if FAILS in measured:
        return FAILS
    return HOLDS if all(s == HOLDS for s in measured) else NOISE


STABILITY_RULE = ("A claim is unstable when its status differs between the runs that measured it, "
                  "stable when every run that measured it agrees; runs that did not measure it do not count.")


def stability(statuses: Iterable[str]) -> str:
    """`stable`, `unstable` (the status flips between runs) or `not compared` (measured in < 2 runs)."""
    measured = [s for s in statuses if s != NOT_MEASURED]
    if len(measured) < 2:
        return NOT_COMPARED
    return STABLE if len(set(measured)) == 1 else UNSTABLE
