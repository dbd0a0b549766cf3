"""Uncertainty for every accuracy that decides something.

One place for the statistics the report, the finetune grid and the claims card rely on:
- `wilson_interval`: 95 % interval of one accuracy (k correct of n);
- `majority_baseline`: what always answering the most frequent label scores on a split;
- `compare_paired`: two classifiers on the *same* examples. The exact McNemar test on the
  discordant pairs decides ("won" / "lost" / "within noise"); the interval of the accuracy
  difference shown next to it is the exact conditional one (`mcnemar_interval`), which excludes 0
  exactly when the test rejects, so the two never disagree;
- `paired_lower_bound`: a one-sided lower bound of that difference that also allows for how many examples
  differ (Tango's score interval; the McNemar interval alone does not), for non-inferiority: "the cheaper
  model loses at most …";
- `above_majority`: the same paired comparison against the constant majority predictor, which is
  how a model that "did not learn the task" is detected;
- `paired_ratio_t`: the difference of two losses measured on the same validation batches (summed
  loss / token count per batch), with a t-interval (n − 1 df) over batches;
- `t_interval`: mean and t-interval of per-unit values (per-seed differences, say);
- `welch_mean_of_differences`: an unweighted mean over groups of differences of group means
  (claim 5: module types, weight matrices as units) with a Welch–Satterthwaite t-interval;
- `sign_flip_test`: the exact two-sided permutation (sign-flip) test that per-unit integer
  differences are symmetric about 0;
- `bootstrap_mean`: the mean of per-unit values with its bootstrap interval;
- `median_interval`: the median of per-unit values (per-round latency ratios, say) with its
  distribution-free interval from order statistics (exact coverage ≥ the level for any continuous
  distribution; no normality, which latency ratios with their heavy tails do not have).

Why t and not the percentile bootstrap over batches: with 6–50 units a percentile bootstrap is
anti-conservative (simulated false-positive rates 13 / 11 / 8 / 7 % at 6 / 8 / 20 / 50 batches,
docs FIELD-NOTES), a t-interval with n − 1 df holds its 5 % (tests/unit/test_calibration.py).

Everything is deterministic (a bootstrap has a fixed seed), so a report rendered twice from the
same predictions says the same thing. Only the standard library and NumPy are used, so the GPU
image (no SciPy) can compute the flags too: the t and beta quantiles are computed here from the
regularized incomplete beta function.
"""

from __future__ import annotations

import functools
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
    test: str = "exact McNemar (two-sided, alpha 0.05); 95 % exact conditional interval of the difference"

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
    behind, otherwise "within noise". The interval reported beside it (`mcnemar_interval`, at
    1 − alpha) is the test inverted, so it excludes 0 exactly when the outcome is decided.
    `confidence` is kept for callers; the interval's level follows alpha so the two agree.
    """
    a, b = _pair(a_correct, b_correct)
    only_a, only_b, p = mcnemar_exact(a, b)
    n = int(a.size)
    diff = (only_a - only_b) / n
    lo, hi = mcnemar_interval(only_a, only_b, n, confidence=1 - alpha)
    outcome: Outcome = "within noise"
    if p < alpha:
        outcome = "won" if only_a > only_b else "lost"
    return PairedComparison(outcome, float(a.mean()), float(b.mean()), diff, lo, hi, p, only_a, only_b, n,
                            f"exact McNemar (two-sided, alpha {alpha:g}); {round((1 - alpha) * 100)} % exact conditional "
                            "interval of the difference (excludes 0 exactly when the test rejects)")


def above_majority(predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray,
                   alpha: float = ALPHA) -> PairedComparison:
    """The classifier against always answering the split's majority label, on the same examples.

    `outcome != "won"` means the model is not significantly better than the constant answer: it
    did not learn the task.
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


def multinomial_rows(n: int, probs: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` draws of Multinomial(n, probs) as rows, one vectorised binomial per category.

    Category j's count given the earlier ones is Binomial(what is left, p_j / (the probability left)):
    the same distribution as `rng.multinomial`, which loops over rows in C and is ~20× slower here.
    """
    p = np.asarray(probs, dtype=np.float64)
    out = np.empty((size, p.size), dtype=np.int64)
    left = np.full(size, n, dtype=np.int64)
    rest = 1.0
    for j in range(p.size - 1):
        share = 0.0 if rest <= 0 else min(1.0, max(0.0, p[j] / rest))
        out[:, j] = rng.binomial(left, share)
        left -= out[:, j]
        rest -= p[j]
    out[:, -1] = left
    return out


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
        draws = multinomial_rows(n, counts / n, min(chunk, samples - start), rng)
        boot[start:start + draws.shape[0]] = draws @ uniq / n
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(v.mean()), float(lo), float(hi)


# --- t and beta distributions without SciPy ------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x={x} outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _bisect(f: Any, lo: float, hi: float, target: float, iters: int = 200) -> float:
    """x in [lo, hi] with f(x) = target for an increasing f."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


@functools.lru_cache(maxsize=4096)
def beta_quantile(q: float, a: float, b: float) -> float:
    """x with I_x(a, b) = q: Newton steps on the beta density, kept inside a shrinking bracket."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"beta_quantile: q={q} outside (0, 1)")
    lo, hi = 0.0, 1.0
    x = min(max(a / (a + b), 1e-12), 1 - 1e-12)
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    for _ in range(200):
        f = betainc(a, b, x) - q
        if f < 0:
            lo = x
        else:
            hi = x
        if abs(f) < 1e-14 or hi - lo < 1e-15:
            break
        dens = math.exp(log_norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x))
        step = x - f / dens if dens > 0 else -1.0
        x = step if lo < step < hi else 0.5 * (lo + hi)
    return x


def t_cdf(t: float, df: float) -> float:
    """Student-t distribution function with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"t distribution needs df > 0, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=4096)
def t_quantile(q: float, df: float) -> float:
    """Student-t quantile, e.g. t_quantile(0.975, 1) = 12.706."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"t_quantile: q={q} outside (0, 1)")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    hi = 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    return _bisect(lambda t: t_cdf(t, df), 0.0, hi, q)


# --- intervals that hold their level with few units ----------------------------------------------

def mcnemar_interval(only_a: int, only_b: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Interval of accuracy(A) − accuracy(B) that agrees with the exact McNemar test.

    Given the m = only_a + only_b discordant examples, only_a ~ Binomial(m, π) and the difference
    is (2π − 1)·m/n. The Clopper–Pearson interval of π (the inversion of the same exact binomial
    test McNemar's is), mapped onto the difference, contains 0 exactly when the two-sided test's
    p >= 1 − confidence. With no discordant example the difference is 0 and so is its interval.
    """
    if n <= 0 or only_a < 0 or only_b < 0 or only_a + only_b > n:
        raise ValueError(f"mcnemar_interval: only_a={only_a}, only_b={only_b} do not fit n={n}")
    m = only_a + only_b
    if m == 0:
        return 0.0, 0.0
    half = (1 - confidence) / 2
    p_lo = 0.0 if only_a == 0 else beta_quantile(half, only_a, m - only_a + 1)
    p_hi = 1.0 if only_a == m else beta_quantile(1 - half, only_a + 1, m - only_a)
    return (2 * p_lo - 1) * m / n, (2 * p_hi - 1) * m / n


TANGO_CORRECTION = 0.5
"""Continuity correction of `paired_lower_bound`'s score statistic (counts): without it the one-sided 5 % test
rejects up to 5.8 % of the time at the boundary when the two differ on a handful of examples (exact rates
over a grid of n, margin and discordance, tests/unit/test_stats.py); with it, at most 5 %."""


def _tango_z(only_a: int, only_b: int, n: int, delta: float, correction: float = TANGO_CORRECTION) -> float:
    """Tango's score statistic for H0: accuracy(A) − accuracy(B) = delta on paired examples (Tango 1998,
    Stat. Med. 17:891): the variance uses the share of B-only examples that maximizes the likelihood under H0.
    The numerator is moved `correction` counts towards 0 (a continuity correction)."""
    qa = 2 * n
    qb = -only_a - only_b + (2 * n - only_a + only_b) * delta
    qc = -only_b * delta * (1 - delta)
    p_b = (math.sqrt(max(qb * qb - 4 * qa * qc, 0.0)) - qb) / (2 * qa)
    var = n * (2 * p_b + delta * (1 - delta))
    num = only_a - only_b - n * delta
    num = max(num - correction, 0.0) if num > 0 else min(num + correction, 0.0)
    return num / math.sqrt(var) if var > 0 else math.inf


def paired_lower_bound(a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray,
                       alpha: float = ALPHA) -> float:
    """One-sided (1 − alpha) lower bound of accuracy(A) − accuracy(B) on the same examples, whatever the share of
    examples on which they differ: what a non-inferiority decision ("A loses at most …") needs.

    Tango's score interval inverted, with a continuity correction of 1/2 (`TANGO_CORRECTION`): the smallest
    delta whose one-sided score test is not rejected. Why not `mcnemar_interval`: it is exact *given* the m
    discordant examples but takes m/n for their share, so when A and B differ on few examples (m often below
    its mean) it crosses −margin far too often (simulated: n = 800, truth exactly 1 point worse, every
    differing example against A: 46 % instead of 5 %). Its Bonferroni repair (π and the discordant share
    bounded separately) holds its level but prefers nothing that differs on more than 2 of 800 examples.
    This bound's exact false-positive rate stays at or below 5 % over n = 200..1,200, margins 1–3 points and
    discordance 1–3× the margin (enumerated in tests/unit/test_stats.py), and the report's rule is simulated through the
    answer tables (tests/unit/test_calibration.py). Identical predictions on 800 examples give −0.45 points.
    """
    a, b = _pair(a_correct, b_correct)
    only_a, only_b, _ = mcnemar_exact(a, b)
    n = int(a.size)
    z = _z(1 - 2 * alpha)
    return _bisect(lambda d: -_tango_z(only_a, only_b, n, d), -1.0, (only_a - only_b) / n, -z)


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, t-interval with n − 1 df) of per-unit values; needs two units or more."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size < 2:
        raise ValueError(f"a t-interval needs at least two units, got {v.size}")
    mean = float(v.mean())
    half = t_quantile(0.5 + confidence / 2, v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half


def paired_ratio_t(
    num_a: Sequence[float] | np.ndarray,
    den_a: Sequence[float] | np.ndarray,
    num_b: Sequence[float] | np.ndarray,
    den_b: Sequence[float] | np.ndarray,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """(Σnum_a/Σden_a − Σnum_b/Σden_b, t-interval with n − 1 df over the units).

    Made for validation losses: unit i is one validation batch, `num` its summed masked-token loss
    and `den` its masked-token count, so Σnum/Σden is the loss over all masked tokens. Both models
    were scored on the same batches, so each batch contributes one paired value (`ratio_contrast_t`).
    """
    return ratio_contrast_t([(1.0, num_a, den_a), (-1.0, num_b, den_b)], confidence)


def ratio_contrast_t(
    terms: Sequence[tuple[float, Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """(Σ_k c_k·Σnum_k/Σden_k, t-interval with n − 1 df) for ratios measured on the same n units.

    Each unit contributes its linearised share of the contrast, Σ_k c_k·(num_k − R_k·den_k)/mean(den_k)
    (the delta method for a ratio of sums; with equal token counts, the contrast of the batch mean
    losses), and the interval is the t-interval of those n values. A difference of two losses is
    c = (+1, −1); an interaction (the large model's advantage at one data fraction minus at another)
    is (+1, −1, −1, +1). Shared batch difficulty cancels out of every unit's value.
    """
    if not terms:
        raise ValueError("a contrast needs at least one ratio")
    n = None
    est, z = 0.0, None
    for c, num, den in terms:
        x, w = np.asarray(num, dtype=np.float64).reshape(-1), np.asarray(den, dtype=np.float64).reshape(-1)
        if x.size != w.size or (n is not None and x.size != n):
            raise ValueError("every ratio of a contrast must be measured on the same units")
        n = x.size
        if w.sum() <= 0:
            raise ValueError("a ratio of sums needs a positive denominator")
        r = x.sum() / w.sum()
        est += c * r
        share = c * (x - r * w) / w.mean()
        z = share if z is None else z + share
    assert n is not None and z is not None
    if n < 2:
        raise ValueError(f"a t-interval needs at least two units, got {n}")
    half = t_quantile(0.5 + confidence / 2, n - 1) * float(z.std(ddof=1)) / math.sqrt(n)
    return float(est), float(est - half), float(est + half)


def welch_mean_of_differences(
    groups: Sequence[tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float, float]:
    """(d, low, high, df): d = unweighted mean over groups of mean(a_g) − mean(b_g), Welch–Satterthwaite.

    Each group (a module type) holds the per-unit values (one per weight matrix) of A and of B, at
    least two each; units are independent, A and B unpaired. Var(d) = Σ_g (s²_a/n_a + s²_b/n_b) / G²,
    its degrees of freedom by Welch–Satterthwaite.
    """
    if not groups:
        raise ValueError("welch_mean_of_differences needs at least one group")
    diffs, comps = [], []
    for a, b in groups:
        xa, xb = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
        if xa.size < 2 or xb.size < 2:
            raise ValueError(f"each group needs at least two units per side, got {xa.size} and {xb.size}")
        diffs.append(xa.mean() - xb.mean())
        comps += [(xa.var(ddof=1) / xa.size, xa.size - 1), (xb.var(ddof=1) / xb.size, xb.size - 1)]
    g = len(groups)
    d = float(np.mean(diffs))
    var = sum(v for v, _ in comps) / g**2
    if var <= 0:
        return d, d, d, float("inf")
    df = sum(v for v, _ in comps) ** 2 / sum(v * v / k for v, k in comps if v > 0)
    df = math.floor(df * 100) / 100  # rounded down: a hair wider, and the quantile is cached
    half = t_quantile(0.5 + confidence / 2, max(df, 1.0)) * math.sqrt(var)
    return d, d - half, d + half, float(df)


def _binom_half_pmf(n: int) -> np.ndarray:
    """P(K = k), k = 0..n, for K ~ Binomial(n, 1/2)."""
    k = np.arange(n + 1)
    logs = (math.lgamma(n + 1) - np.array([math.lgamma(i + 1) + math.lgamma(n - i + 1) for i in k]) - n * math.log(2))
    return np.exp(logs)


def sign_flip_test(values: Sequence[float] | np.ndarray) -> float:
    """Exact two-sided p-value of the sign-flip (permutation) test of "symmetric about 0".

    For paired per-unit differences u_i (integers: a difference of correctness flags takes
    −2..2), each nonzero u_i's sign is a fair coin under the null; T = Σ u_i is then
    Σ_a a·(2K_a − c_a) over the distinct magnitudes a (c_a units each, K_a ~ Binomial(c_a, 1/2)),
    whose exact distribution is a convolution. p = P(|T| >= |t_observed|). No unit that differs: 1.
    """
    u = np.asarray(values, dtype=np.float64).reshape(-1)
    mags = np.abs(u[u != 0])
    if not np.all(mags == np.round(mags)):
        raise ValueError("sign_flip_test takes integer-valued differences")
    if mags.size == 0:
        return 1.0
    mags = mags.astype(np.int64)
    total = int(mags.sum())
    dist = np.zeros(1)
    dist[0] = 1.0  # distribution of Σ a·K_a on 0..Σ a·c_a, then T = 2·S − total
    for a, c in zip(*np.unique(mags, return_counts=True), strict=True):
        step = np.zeros(int(a) * int(c) + 1)
        step[:: int(a)] = _binom_half_pmf(int(c))
        dist = np.convolve(dist, step)
    t_values = 2 * np.arange(dist.size) - total
    observed = abs(float(u.sum()))
    return float(min(1.0, dist[np.abs(t_values) >= observed - 1e-9].sum()))


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(median, lo, hi): [x₍ₖ₎, x₍ₙ₋ₖ₊₁₎] of the sorted values, with k the largest rank such that
    P(Binomial(n, ½) ≤ k − 1) ≤ (1 − confidence)/2; coverage is then ≥ `confidence` whatever the
    (continuous) distribution. Fewer than 6 values cannot give a 95 % interval: (median, -inf, inf)."""
    x = sorted(float(v) for v in values)
    n = len(x)
    if n == 0:
        raise ValueError("median_interval of no values")
    med = float(np.median(x))
    tail = (1 - confidence) / 2
    cdf, k = 0.0, 0
    for j in range(n):  # cdf = P(B ≤ j)
        cdf += math.comb(n, j) / 2**n
        if cdf > tail:
            break
        k = j + 1
    if k == 0:
        return med, -math.inf, math.inf
    return med, x[k - 1], x[n - k]
