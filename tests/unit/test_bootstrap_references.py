"""Every bootstrap interval against plain index resampling, at a tolerance well below the interval's width.

The procedures take shortcuts (a multinomial over the distinct per-example values, resample weights instead
of index lists, vectorised BLEU); the references take none: they draw n indices with replacement, compute the
statistic on the drawn units, and take the 2.5 and 97.5 percentiles. With 40,000 reference resamples the
Monte-Carlo disagreement is below 1 % of the interval's width; the tolerance is 3 %. A 90 % interval
reported as 95 % sits ~7.5 % of the width inside at each end, so it fails.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tlc_export.stats import bootstrap_mean, paired_bootstrap_diff, paired_ratio_bootstrap

SAMPLES, CHUNK, TOL = 40_000, 2_000, 0.03


def index_bootstrap(stat: Callable[[np.ndarray], np.ndarray], n: int, seed: int = 7) -> tuple[float, float]:
    """2.5 / 97.5 percentiles of `stat` over SAMPLES resamples of n indices drawn with replacement
    (`stat` takes a [k, n] array of index rows and returns k values)."""
    rng = np.random.default_rng(seed)
    vals = np.concatenate([stat(rng.integers(0, n, (CHUNK, n))) for _ in range(SAMPLES // CHUNK)])
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return float(lo), float(hi)


def assert_interval(got: tuple[float, float], ref: tuple[float, float]) -> None:
    width = ref[1] - ref[0]
    assert width > 0
    assert abs(got[0] - ref[0]) < TOL * width, (got, ref, (got[0] - ref[0]) / width)
    assert abs(got[1] - ref[1]) < TOL * width, (got, ref, (got[1] - ref[1]) / width)


def test_accuracy_difference_interval_is_index_resampling() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(1000) < 0.75
    b = a.copy()
    flip = rng.choice(1000, 100, replace=False)
    b[flip] = ~b[flip]  # ~25 examples only B gets right, ~75 only A
    diff, lo, hi = paired_bootstrap_diff(a, b)
    d = a.astype(float) - b.astype(float)
    assert diff == pytest.approx(d.mean(), abs=1e-12)
    assert_interval((lo, hi), index_bootstrap(lambda i: d[i].mean(1), d.size))


def test_ratio_of_sums_interval_is_index_resampling() -> None:
    rng = np.random.default_rng(1)
    m = 300
    counts = rng.integers(50, 150, m).astype(float)
    loss_b = 5.0 + rng.normal(0, 0.5, m)
    loss_a = loss_b - 0.05 + rng.normal(0, 0.3, m)
    na, nb = loss_a * counts, loss_b * counts
    diff, lo, hi = paired_ratio_bootstrap(na, counts, nb, counts)
    assert diff == pytest.approx(na.sum() / counts.sum() - nb.sum() / counts.sum(), abs=1e-12)
    ref = index_bootstrap(lambda i: na[i].sum(1) / counts[i].sum(1) - nb[i].sum(1) / counts[i].sum(1), m)
    assert_interval((lo, hi), ref)


@pytest.mark.parametrize("kind", ["continuous", "five values"])
def test_mean_interval_is_index_resampling(kind: str) -> None:
    rng = np.random.default_rng(2)
    v = rng.normal(0.3, 1.0, 400) if kind == "continuous" else rng.integers(-2, 3, 600).astype(float)
    mean, lo, hi = bootstrap_mean(v)
    assert mean == pytest.approx(v.mean(), abs=1e-12)
    assert_interval((lo, hi), index_bootstrap(lambda i: v[i].mean(1), v.size))


def test_bleu_difference_interval_is_sacrebleu_on_the_resampled_sentences() -> None:
    """Same index draws as the procedure (its seed), then sacrebleu's corpus BLEU of each resampled corpus:
    every sentence counts as often as it is drawn. Equal to float precision, not only within Monte-Carlo."""
    from sacrebleu.metrics import BLEU

    from tlc_export.tasks.translation.metrics import compare_translations

    rng = np.random.default_rng(3)
    words = ["le", "chat", "chien", "voit", "aime", "la", "maison", "grande", "petite", "rouge", "et", "il"]
    refs = [" ".join(rng.choice(words, size=int(rng.integers(4, 12)))) for _ in range(30)]
    hyp_a = [" ".join(r.split()[:-1]) if i % 3 else " ".join(rng.choice(words, 6)) for i, r in enumerate(refs)]
    hyp_b = [" ".join(rng.choice(words, size=len(r.split()))) if i % 2 else r for i, r in enumerate(refs)]
    samples, seed = 150, 4
    got = compare_translations(hyp_a, hyp_b, refs, samples=samples, seed=seed)

    bleu = BLEU(tokenize="13a")
    idx = np.random.default_rng(seed).integers(0, len(refs), size=(samples, len(refs)))
    diffs = [bleu.corpus_score([hyp_a[j] for j in row], [[refs[j] for j in row]]).score
             - bleu.corpus_score([hyp_b[j] for j in row], [[refs[j] for j in row]]).score for row in idx]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    assert hi - lo > 5  # a real interval, several BLEU points wide
    assert got.diff_ci_low == pytest.approx(lo, abs=1e-6) and got.diff_ci_high == pytest.approx(hi, abs=1e-6)
    assert got.diff == pytest.approx(bleu.corpus_score(hyp_a, [refs]).score - bleu.corpus_score(hyp_b, [refs]).score)
