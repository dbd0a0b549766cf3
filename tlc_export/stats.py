"""Uncertainty for every accuracy that decides something.

One place for the statistics the report, the finetune grid and the claims card rely on:
- `wilson_interval`: 95 % interval of one accuracy (k correct of n);
- `majority_baseline`: what always answering the most frequent label scores on a split;
- `compare_paired`: two classifiers on the *same* examples. The exact McNemar test on the
  discordant pairs decides ("won" / "lost" / "within noise"); a paired bootstrap gives the
  interval of the accuracy difference that is shown next to it;
- `above_majority`: the same paired comparison against the constant majority predictor, which is
  how a model that "did not learn the task" is detected;
- `paired_ratio_bootstrap`: the difference of two losses measured on the same validation batches
  (summed loss / token count per batch), with a paired bootstrap interval over batches;
- `bootstrap_mean`: the mean of per-unit values (e.g. a per-example difference of accuracy drops)
  with its bootstrap interval.

Everything is deterministic (the bootstrap has a fixed seed), so a report rendered twice from the
same predictions says the same thing. Only the standard library and NumPy are used, so the GPU
image (no SciPy) can compute the flags too.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

CONFIDENCE = 0.95
ALPHA = 0.05
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0

Outcome = Literal["won", "lost", "within noise"]


def _z(confidence: float) -> float:
    """Two-sided standard-normal quantile, e.g. 1.959964 for 0.95."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved near 0 and 1, unlike Wald)."""
    if n <= 0:
        raise ValueError("an interval needs at least one example (n >= 1)")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} is outside 0..n={n}")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no rounding residue
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True)
class Accuracy:
    """An accuracy with its interval, as stored in results files (`to_dict`)."""

    accuracy: float
    correct: int
    n: int
    ci_low: float
    ci_high: float
    method: str = "wilson-95"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        return f"{100 * self.accuracy:.1f} % [{100 * self.ci_low:.1f}, {100 * self.ci_high:.1f}] (n={self.n})"


def accuracy_interval(correct: Sequence[bool] | np.ndarray, confidence: float = CONFIDENCE) -> Accuracy:
    """Accuracy of per-example correctness flags, with its Wilson interval."""
    c = np.asarray(correct, dtype=bool)
    k, n = int(c.sum()), int(c.size)
    lo, hi = wilson_interval(k, n, confidence)
    return Accuracy(k / n, k, n, lo, hi, f"wilson-{round(confidence * 100)}")


@dataclass(frozen=True)
class Majority:
    """The constant predictor that always answers the most frequent label of a split."""

    label: int
    accuracy: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def majority_baseline(labels: Sequence[int] | np.ndarray) -> Majority:
    """Most frequent label (ties: the smaller label) and its share of the split."""
    labs = [int(x) for x in np.asarray(labels).reshape(-1)]
    if not labs:
        raise ValueError("the majority baseline needs at least one label")
    counts = Counter(labs)
    label = min(counts, key=lambda k: (-counts[k], k))
    return Majority(label, counts[label] / len(labs), len(labs))


def _log_binom_pmf(k: int, n: int) -> float:
    """log P(X = k) for X ~ Binomial(n, 1/2)."""
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)


def mcnemar_exact(a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray) -> tuple[int, int, float]:
    """Exact (binomial) McNemar test: (a-only-correct, b-only-correct, two-sided p-value).

    Only discordant examples carry information; under "equally accurate" each is a fair coin.
    """
    a, b = _pair(a_correct, b_correct)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    n = only_a + only_b
    if n == 0:
        return only_a, only_b, 1.0
    k = min(only_a, only_b)
    logs = [_log_binom_pmf(i, n) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(x - top) for x in logs)
    return only_a, only_b, min(1.0, 2 * tail)


def paired_bootstrap_diff(
    a_correct: Sequence[bool] | np.ndarray,
    b_correct: Sequence[bool] | np.ndarray,
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """(accuracy(a) − accuracy(b), percentile interval) by resampling examples with replacement.

    The per-example difference takes only the values −1, 0, +1, so a bootstrap resample is fully
    described by how many of each it draws: one multinomial draw per resample is the exact same
    distribution as resampling indices, at O(samples) cost whatever the split size.
    """
    a, b = _pair(a_correct, b_correct)
    n = a.size
    up = int(np.sum(a & ~b))
    down = int(np.sum(~a & b))
    diff = (up - down) / n
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [up / n, down / n, (n - up - down) / n], size=samples)
    boot = (counts[:, 0] - counts[:, 1]) / n
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return diff, float(lo), float(hi)


@dataclass(frozen=True)
class PairedComparison:
    """A against B on the same examples. `outcome` is A's: "won", "lost" or "within noise"."""

    outcome: Outcome
    accuracy_a: float
    accuracy_b: float
    diff: float  # accuracy_a − accuracy_b
    diff_ci_low: float
    diff_ci_high: float
    p_value: float
    only_a: int  # examples only A gets right
    only_b: int
    n: int
    test: str = "exact McNemar (two-sided, alpha 0.05); 95 % paired-bootstrap interval of the difference"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        return (f"{100 * self.diff:+.1f} points [{100 * self.diff_ci_low:+.1f}, {100 * self.diff_ci_high:+.1f}], "
                f"McNemar p = {self.p_value:.3g}, n = {self.n}")


def compare_paired(
    a_correct: Sequence[bool] | np.ndarray,
    b_correct: Sequence[bool] | np.ndarray,
    alpha: float = ALPHA,
    confidence: float = CONFIDENCE,
) -> PairedComparison:
    """Decide whether A is more accurate than B on the same examples.

    The rule: "won" when McNemar's p < alpha and A is ahead, "lost" when p < alpha and A is
    behind, otherwise "within noise". The bootstrap interval is reported beside it; at the margin
    the two can disagree, and the test decides.
    """
    a, b = _pair(a_correct, b_correct)
    only_a, only_b, p = mcnemar_exact(a, b)
    diff, lo, hi = paired_bootstrap_diff(a, b, confidence=confidence)
    outcome: Outcome = "within noise"
    if p < alpha:
        outcome = "won" if only_a > only_b else "lost"
    return PairedComparison(outcome, float(a.mean()), float(b.mean()), diff, lo, hi, p, only_a, only_b, int(a.size),
                            f"exact McNemar (two-sided, alpha {alpha:g}); {round(confidence * 100)} % paired-bootstrap "
                            "interval of the difference")


def above_majority(predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray,
                   alpha: float = ALPHA) -> PairedComparison:
    """The classifier against always answering the split's majority label, on the same examples.

    `outcome != "won"` means the model is not significantly better than the constant answer: it
    did not learn the task;
- `paired_ratio_bootstrap`: the difference of two losses measured on the same validation batches
  (summed loss / token count per batch), with a paired bootstrap interval over batches;
- `bootstrap_mean`: the mean of per-unit values (e.g. a per-example difference of accuracy drops)
  with its bootstrap interval.
    """
    preds = np.asarray(predictions).reshape(-1)
    labs = np.asarray(labels).reshape(-1)
    if preds.shape != labs.shape:
        raise ValueError(f"{preds.size} predictions for {labs.size} labels")
    maj = majority_baseline(labs)
    return compare_paired(preds == labs, labs == maj.label, alpha=alpha)


def _pair(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=bool).reshape(-1)
    y = np.asarray(b, dtype=bool).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired comparison needs the same examples: got {x.size} and {y.size} flags")
    if x.size == 0:
        raise ValueError("paired comparison needs at least one example")
    return x, y


def _bootstrap_weights(n: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """How many times each of n units is drawn in each of `samples` resamples (each row sums to n)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=samples)


def paired_ratio_bootstrap(
    num_a: Sequence[float] | np.ndarray,
    den_a: Sequence[float] | np.ndarray,
    num_b: Sequence[float] | np.ndarray,
    den_b: Sequence[float] | np.ndarray,
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """(Σnum_a/Σden_a − Σnum_b/Σden_b, percentile interval), resampling units jointly.

    Made for validation losses: unit i is one validation batch, `num` its summed masked-token loss
    and `den` its masked-token count, so Σnum/Σden is the loss over all masked tokens. Both models
    were scored on the same batches, so a resample draws the *same* batches for A and B (paired):
    batch-to-batch difficulty, which both share, cancels out of the difference.
    """
    arrays = [np.asarray(x, dtype=np.float64).reshape(-1) for x in (num_a, den_a, num_b, den_b)]
    n = arrays[0].size
    if n == 0 or any(a.size != n for a in arrays):
        raise ValueError(f"paired ratio bootstrap needs the same non-zero number of units, got {[a.size for a in arrays]}")
    na, da, nb, db = arrays
    if da.sum() <= 0 or db.sum() <= 0:
        raise ValueError("paired ratio bootstrap needs positive denominators")
    diff = float(na.sum() / da.sum() - nb.sum() / db.sum())
    rng = np.random.default_rng(seed)
    boot = np.empty(samples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, samples, chunk):
        w = _bootstrap_weights(n, min(chunk, samples - start), rng).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot[start:start + w.shape[0]] = w @ na / (w @ da) - w @ nb / (w @ db)
    boot = boot[np.isfinite(boot)]  # a resample may draw only zero-count units
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return diff, float(lo), float(hi)


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """(mean, percentile interval) of per-unit values by resampling units with replacement.

    A resample is fully described by how often it draws each *distinct* value, so one multinomial
    draw over the distinct values is the same distribution as resampling indices, at
    O(samples × distinct values) cost (per-example differences of correctness flags take at most
    five values).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("a bootstrap needs at least one value")
    uniq, counts = np.unique(v, return_counts=True)
    n = v.size
    rng = np.random.default_rng(seed)
    boot = np.empty(samples)
    chunk = max(1, 2_000_000 // uniq.size)
    for start in range(0, samples, chunk):
        draws = rng.multinomial(n, counts / n, size=min(chunk, samples - start))
        boot[start:start + draws.shape[0]] = draws @ uniq / n
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(v.mean()), float(lo), float(hi)
