"""Which (size, compression) to train and ship: the limits filter, the predicted compressed loss ranks.

A candidate's predicted loss is its size's predicted final validation loss plus the compression's
penalty measured on the pilot (the Figure 8 assumption); its interval is the fit's interval moved by
the same penalty. Storage and latency are measured, so they filter exactly. The runner-up is the best
candidate of another size: the question the plan answers is which size to train, and two sizes are
"distinguishable" only when their intervals do not overlap and both fits are trustworthy. Under the null (equal
true final losses) two calibrated 90 % intervals of equal width miss each other with probability erfc(1.645) =
2.0 %; the simulated rate through `fit.fit_curves` and `recommend` is tested in tests/unit/test_calibration.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from tlc_export.errors import PlanError
from tlc_export.report.plan_check import MB, meets_limits

__all__ = ["MB", "Candidate", "PlanError", "Recommendation", "filter_candidates", "recommend", "within"]


@dataclass
class Candidate:
    size: str
    compression: str  # "s30.b4"
    variant: str  # "4L-256H.s30.b4"
    predicted_loss: float
    interval: tuple[float, float]
    penalty: float
    storage_bytes: int
    latency_ms: float
    trustworthy: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval)
        return d


@dataclass
class Recommendation:
    best: Candidate
    runner_up: Candidate | None
    distinguishable: bool | None
    fitting: int  # candidates that met the limits
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best.to_dict(), "runner_up": self.runner_up.to_dict() if self.runner_up else None,
                "distinguishable": self.distinguishable, "candidates_within_limits": self.fitting, "note": self.note}


def within(c: Candidate, max_storage_mb: float | None, max_latency_ms: float | None) -> bool:
    return meets_limits(c.storage_bytes, c.latency_ms, max_storage_mb, max_latency_ms)


def filter_candidates(cands: list[Candidate], max_storage_mb: float | None, max_latency_ms: float | None) -> list[Candidate]:
    """The candidates that meet the limits; a PlanError saying which limit to relax, and by how much, when none does."""
    if not cands:
        raise PlanError("no candidates to choose from: the recipe's grid has no size with a fitted curve")
    ok = [c for c in cands if within(c, max_storage_mb, max_latency_ms)]
    if ok:
        return ok
    problems: list[str] = []
    if max_storage_mb is not None:
        smallest = min(cands, key=lambda c: c.storage_bytes)
        if smallest.storage_bytes > max_storage_mb * MB:
            need = smallest.storage_bytes / MB
            problems.append(f"--max-storage-mb {max_storage_mb:g}: the smallest variant, {smallest.variant}, needs "
                            f"{need:.3f} MB; raise it to at least {need:.3f} (+{need - max_storage_mb:.3f} MB)")
    if max_latency_ms is not None:
        fastest = min(cands, key=lambda c: c.latency_ms)
        if fastest.latency_ms > max_latency_ms:
            problems.append(f"--max-latency-ms {max_latency_ms:g}: the fastest size, {fastest.size}, measured "
                            f"{fastest.latency_ms:.3f} ms; raise it to at least {fastest.latency_ms:.3f} "
                            f"(+{fastest.latency_ms - max_latency_ms:.3f} ms)")
    if not problems:  # each limit alone can be met, but no candidate meets both
        fast = [c for c in cands if within(c, None, max_latency_ms)]
        small = [c for c in cands if within(c, max_storage_mb, None)]
        a = min(fast, key=lambda c: c.storage_bytes)
        b = min(small, key=lambda c: c.latency_ms)
        problems.append(
            f"no variant meets both limits: raise --max-storage-mb {max_storage_mb:g} to at least "
            f"{a.storage_bytes / MB:.3f} (+{a.storage_bytes / MB - max_storage_mb:.3f} MB, {a.variant}), or "
            f"--max-latency-ms {max_latency_ms:g} to at least {b.latency_ms:.3f} "
            f"(+{b.latency_ms - max_latency_ms:.3f} ms, {b.variant})")
    raise PlanError("no (size, compression) fits the limits. " + "; ".join(problems))


def recommend(cands: list[Candidate], max_storage_mb: float | None = None,
              max_latency_ms: float | None = None) -> Recommendation:
    """The lowest predicted compressed loss within the limits. Sizes whose curve could not be fitted at all (too
    few points: no prediction) are left out; when that leaves nothing, a PlanError says to lengthen the pilots."""
    fitted = [c for c in cands if math.isfinite(c.predicted_loss)]
    if cands and not fitted:
        raise PlanError("no size's pilot gave enough validation points to fit a curve; raise --pilot-fraction or "
                        "--budget-s (longer pilots), or --pilot-evals")
    cands = fitted
    ok = sorted(filter_candidates(cands, max_storage_mb, max_latency_ms), key=lambda c: c.predicted_loss)
    best = ok[0]
    others = [c for c in ok if c.size != best.size]
    runner = others[0] if others else None
    if runner is None:
        return Recommendation(best, None, None, len(ok),
                              f"{best.size} is the only size whose variants meet the limits")
    distinct = best.interval[1] < runner.interval[0]
    if not best.trustworthy or not runner.trustworthy:
        distinct = False
    note = (f"{best.size} is predicted better than {runner.size}: the intervals do not overlap" if distinct else
            f"{best.size} and {runner.size} are too close to tell apart (their intervals overlap, or a fit is "
            "not trustworthy): the plan does not pick between them by noise; train both, or the cheaper")
    return Recommendation(best, runner, distinct, len(ok), note)
