"""The decision rules of the claims card, written once: every claim's status comes from here.

A claim of the paper says "larger is better" about some measured quantity. It is checked by
comparing the largest size of the run with the smallest on the same evaluation units (validation
batches, test examples), as a difference d = larger − smaller with a 95 % interval; the interval,
not the point estimate, decides. Statuses:

- "holds": the whole interval lies on the side the paper claims;
- "does not hold": the whole interval lies on the other side;
- "within noise": the interval contains 0: this run cannot tell;
- "not measured": an input is missing (the reason says which and how to get it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

HOLDS = "holds"
FAILS = "does not hold"
NOISE = "within noise"
NOT_MEASURED = "not measured"
STATUSES = (HOLDS, FAILS, NOISE, NOT_MEASURED)

STABLE = "stable"
UNSTABLE = "unstable"
NOT_COMPARED = "not compared"

# With n paired batches that all favour one side, an exact sign test reaches p < 0.05 only for
# n >= 6 (2 · 0.5^6 = 0.031); a percentile bootstrap over fewer units claims more than they hold.
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
