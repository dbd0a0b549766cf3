"""Statistics behind every verdict: textbook values, and the decisions they drive."""

import math

import numpy as np
import pytest

from tlc_export.stats import (
    above_majority,
    accuracy_interval,
    bootstrap_mean,
    compare_paired,
    majority_baseline,
    mcnemar_exact,
    paired_bootstrap_diff,
    paired_lower_bound,
    paired_ratio_bootstrap,
    wilson_interval,
)


def test_wilson_matches_newcombe_1998():
    # Newcombe (1998), Stat. Med. 17:857, example (a): 81/263, score interval 0.2553 to 0.3662.
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-5)
    assert hi == pytest.approx(0.3662, abs=5e-5)


def test_wilson_zero_successes_upper_bound():
    # 0/10: upper = (z^2/2 + z*sqrt(z^2/4)) / (n + z^2) = z^2 / (10 + z^2) with z = 1.96 -> 0.2775
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(1.96**2 / (10 + 1.96**2), abs=2e-4)


def test_mcnemar_exact_textbook():
    # 10 discordant pairs one way, 2 the other: p = 2 * (C(12,0)+C(12,1)+C(12,2)) / 2^12
    a = np.array([1] * 10 + [0] * 2 + [1] * 30, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 30, bool)
    only_a, only_b, p = mcnemar_exact(a, b)
    assert (only_a, only_b) == (10, 2)
    assert p == pytest.approx(2 * (1 + 12 + 66) / 4096, rel=1e-9)


def test_identical_predictions_are_within_noise():
    rng = np.random.default_rng(1)
    c = rng.random(500) < 0.7
    res = compare_paired(c, c.copy())
    assert res.outcome == "within noise"
    assert res.p_value == 1.0
    assert res.diff == 0.0 and res.diff_ci_low == 0.0 and res.diff_ci_high == 0.0


def test_large_gap_is_won_and_reversed_is_lost():
    rng = np.random.default_rng(2)
    truth = rng.random(800)
    a = truth < 0.85
    b = truth < 0.60  # every example b gets right, a gets right too: 200 discordant, all for a
    res = compare_paired(a, b)
    assert res.outcome == "won"
    assert res.p_value < 1e-10
    assert res.diff_ci_low > 0.15
    assert compare_paired(b, a).outcome == "lost"


def test_small_gap_on_small_split_is_within_noise():
    # 2.3 points over 562 examples, the case a user saw reported as a win
    n = 562
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[:390] = True
    b[:350] = True
    b[390:417] = True  # 40 examples only a gets right, 27 only b
    res = compare_paired(a, b)
    assert res.diff == pytest.approx(13 / n)
    assert res.outcome == "within noise"


def test_bootstrap_interval_contains_the_difference_and_is_deterministic():
    rng = np.random.default_rng(3)
    a, b = rng.random(300) < 0.7, rng.random(300) < 0.65
    d1 = paired_bootstrap_diff(a, b)
    d2 = paired_bootstrap_diff(a, b)
    assert d1 == d2
    diff, lo, hi = d1
    assert lo < diff < hi
    assert diff == pytest.approx(a.mean() - b.mean())


def test_majority_and_one_class_classifier_did_not_learn():
    labels = np.array([1] * 58 + [0] * 42)
    maj = majority_baseline(labels)
    assert (maj.label, maj.accuracy) == (1, 0.58)
    assert above_majority(np.ones(100, int), labels).outcome == "within noise"
    assert above_majority(labels.copy(), labels).outcome == "won"


def test_majority_tie_goes_to_the_smaller_label():
    assert majority_baseline([2, 0, 2, 0, 1]).label == 0
    assert majority_baseline([3, 1, 3, 1]).label == 1
    assert majority_baseline([1, 1, 0]).label == 1


def test_accuracy_interval_record():
    acc = accuracy_interval([True] * 81 + [False] * 182)
    assert (acc.correct, acc.n) == (81, 263)
    assert acc.ci_low < acc.accuracy < acc.ci_high


def test_mismatched_pairs_are_rejected():
    with pytest.raises(ValueError, match="same examples"):
        compare_paired([True, False], [True])


def test_predictions_round_trip(tmp_path):
    from tlc_export.predictions import (
        SplitPredictions,
        load_predictions,
        predictions_path_for,
        save_predictions,
    )

    path = predictions_path_for(tmp_path / "4L-256H.s30.b4.safetensors")
    assert path.name == "4L-256H.s30.b4.predictions.npz"
    save_predictions(path, {"dev": SplitPredictions(np.array([0, 1, 1]), np.array([0, 0, 1])),
                            "test": SplitPredictions(np.array([1]), np.array([1]))})
    got = load_predictions(path)
    assert sorted(got) == ["dev", "test"]
    assert got["dev"].correct.tolist() == [True, False, True]
    assert got["test"].accuracy == 1.0


def _index_bootstrap(stat, n, samples=4000, seed=123):
    """Reference: resample indices in a plain loop (a different algorithm and seed from the code's)."""
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(samples)])
    return np.quantile(vals, [0.025, 0.975])


def test_bootstrap_mean_matches_index_resampling_and_normal_theory():
    v = np.random.default_rng(0).normal(0.3, 1.0, 2000)
    mean, lo, hi = bootstrap_mean(v)
    assert mean == pytest.approx(v.mean(), abs=1e-12)
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)  # large n: the bootstrap interval ≈ the normal one
    assert lo == pytest.approx(v.mean() - half, abs=0.15 * half)
    assert hi == pytest.approx(v.mean() + half, abs=0.15 * half)
    flags = np.random.default_rng(1).integers(-2, 3, 500).astype(float)  # few distinct values: multinomial path
    _, lo2, hi2 = bootstrap_mean(flags)
    ref = _index_bootstrap(lambda i: flags[i].mean(), flags.size)
    assert lo2 == pytest.approx(ref[0], abs=0.02) and hi2 == pytest.approx(ref[1], abs=0.02)
    assert bootstrap_mean(flags) == bootstrap_mean(flags)  # deterministic
    assert bootstrap_mean(np.full(50, 0.25)) == (0.25, 0.25, 0.25)


def test_paired_ratio_bootstrap_is_the_loss_difference_with_a_paired_interval():
    rng = np.random.default_rng(2)
    counts = rng.integers(80, 120, 12).astype(float)
    difficulty = rng.normal(0, 0.5, 12)  # shared by both models: pairing must cancel it
    loss_b = 5.0 + difficulty
    loss_a = loss_b - 0.2 + rng.normal(0, 0.02, 12)
    sums_a, sums_b = loss_a * counts, loss_b * counts
    d, lo, hi = paired_ratio_bootstrap(sums_a, counts, sums_b, counts)
    assert d == pytest.approx(sums_a.sum() / counts.sum() - sums_b.sum() / counts.sum(), rel=1e-12)
    assert lo < d < hi < 0
    ref = _index_bootstrap(lambda i: sums_a[i].sum() / counts[i].sum() - sums_b[i].sum() / counts[i].sum(), 12)
    assert lo == pytest.approx(ref[0], abs=0.01) and hi == pytest.approx(ref[1], abs=0.01)
    # Unpaired (the two models on independently drawn batches) the shared difficulty would swamp 0.2:
    other = np.random.default_rng(9)
    unpaired = _index_bootstrap(lambda i: sums_a[i].sum() / counts[i].sum()
                                - (lambda j: sums_b[j].sum() / counts[j].sum())(other.integers(0, 12, 12)), 12)
    assert unpaired[1] - unpaired[0] > 5 * (hi - lo)
    with pytest.raises(ValueError, match="same non-zero number"):
        paired_ratio_bootstrap(sums_a, counts, sums_b[:5], counts[:5])


# ---------------------------------------------------------------- t, beta and the intervals built on them


def test_t_quantiles_match_printed_tables() -> None:
    from tlc_export.stats import t_quantile

    # Student-t 97.5 % points from any printed table.
    for df, t in ((1, 12.706), (2, 4.303), (5, 2.571), (7, 2.365), (19, 2.093), (30, 2.042), (120, 1.980)):
        assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-3)
    assert t_quantile(0.025, 5) == pytest.approx(-2.571, abs=1e-3)


def test_mcnemar_interval_is_clopper_pearson_and_agrees_with_the_exact_test_on_a_grid() -> None:
    from tlc_export.stats import mcnemar_exact, mcnemar_interval

    # Clopper-Pearson for 0 of 10 has upper end 1 − 0.025^(1/10) = 0.3085 (closed form): here all 10
    # discordant examples favour B, so the difference's interval is [−1, 2·0.3085 − 1]·10/n.
    lo, hi = mcnemar_interval(0, 10, 100)
    assert lo == pytest.approx(-0.1) and hi == pytest.approx((2 * (1 - 0.025 ** 0.1) - 1) * 0.1, abs=1e-9)
    # The grid: the interval excludes 0 exactly when the exact McNemar test rejects.
    n = 400
    for only_a in range(60):
        for only_b in range(60):
            a = np.zeros(n, bool)
            b = np.zeros(n, bool)
            a[:only_a] = True
            b[only_a:only_a + only_b] = True
            _, _, p = mcnemar_exact(a, b)
            lo, hi = mcnemar_interval(only_a, only_b, n)
            assert (not lo <= 0 <= hi) == (p < 0.05), (only_a, only_b, p, lo, hi)
            assert lo <= (only_a - only_b) / n <= hi


def test_compare_paired_shows_the_interval_that_agrees_with_its_test() -> None:
    a = np.array([True] * 12 + [False] * 3 + [True] * 85)
    b = np.array([False] * 12 + [True] * 3 + [True] * 85)
    c = compare_paired(a, b)
    assert c.outcome == "won" and c.p_value < 0.05 and c.diff_ci_low > 0 and c.diff == pytest.approx(0.09)
    assert "exact conditional" in c.test


def test_sign_flip_test_against_enumerating_every_sign() -> None:
    import itertools

    from tlc_export.stats import sign_flip_test

    for u in ([2, -1, 1, 1, 2, 2, 1], [1, 1, 1, 1], [-2, -2, 1, 0, 0, 2, -1, -1], [1, -1], [0, 0]):
        nz = [abs(x) for x in u if x]
        obs = abs(sum(u))
        hits = sum(abs(sum(s * m for s, m in zip(signs, nz, strict=True))) >= obs
                   for signs in itertools.product((-1, 1), repeat=len(nz)))
        assert sign_flip_test(u) == pytest.approx(hits / 2 ** len(nz) if nz else 1.0)
    assert sign_flip_test([-1] * 4 + [0] * 500) == pytest.approx(0.125)  # 4 one-way examples never decide


def test_paired_ratio_t_with_equal_counts_is_the_t_interval_of_batch_differences() -> None:
    from tlc_export.stats import paired_ratio_t

    d = np.array([0.10, -0.05, 0.20, 0.00, 0.15, 0.05])  # per-batch mean-loss differences, 6 batches
    counts = np.full(6, 50.0)
    base = np.array([3.0, 3.5, 2.8, 4.0, 3.3, 3.1])
    est, lo, hi = paired_ratio_t((base + d) * counts, counts, base * counts, counts)
    sd = math.sqrt(sum((x - d.mean()) ** 2 for x in d) / 5)
    half = 2.571 * sd / math.sqrt(6)  # t(0.975, 5) from the table
    assert est == pytest.approx(d.mean()) and (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-3)


def test_welch_mean_of_differences_one_group_matches_welch_by_hand() -> None:
    from tlc_export.stats import welch_mean_of_differences

    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 2.5, 3.0]
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    d, lo, hi, got_df = welch_mean_of_differences([(a, b)])
    assert d == pytest.approx(2.5 - 2.5) and got_df == pytest.approx(df, abs=0.01)
    assert 4 < df < 5  # between t(0.975, 4) = 2.776 and t(0.975, 5) = 2.571
    assert 2.571 * math.sqrt(va + vb) <= hi <= 2.776 * math.sqrt(va + vb) and lo == pytest.approx(-hi)


def test_t_interval_of_a_textbook_sample() -> None:
    """1..5: mean 3, s = √2.5, n − 1 = 4 degrees of freedom, t(0.975, 4) = 2.776 from a printed table."""
    from tlc_export.stats import t_interval

    mean, lo, hi = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)
    assert mean == 3.0
    assert lo == pytest.approx(3.0 - half, abs=2e-3) and hi == pytest.approx(3.0 + half, abs=2e-3)


def test_welch_mean_of_differences_over_two_groups_divides_the_variance_by_g_squared() -> None:
    """d = (d₁ + d₂) / 2, so Var(d) = (Var d₁ + Var d₂) / 4; with df ≈ 8.13 the 97.5 % point lies between the
    printed t(0.975, 9) = 2.262 and t(0.975, 8) = 2.306."""
    from tlc_export.stats import welch_mean_of_differences

    groups = [([1.0, 2.0, 3.0, 4.0], [2.0, 2.5, 3.0]), ([0.0, 1.0, 0.5, 1.5], [3.0, 1.0, 2.0, 2.5])]
    parts = [np.var(x, ddof=1) / len(x) for pair in groups for x in pair]
    dofs = [len(x) - 1 for pair in groups for x in pair]
    var = sum(parts) / 4
    df = sum(parts) ** 2 / sum(v * v / k for v, k in zip(parts, dofs, strict=True))
    d, lo, hi, got_df = welch_mean_of_differences(groups)
    assert d == pytest.approx(((2.5 - 2.5) + (0.75 - 2.125)) / 2)
    assert got_df == pytest.approx(df, abs=0.01) and 8 < df < 9
    assert 2.262 * math.sqrt(var) <= hi - d <= 2.306 * math.sqrt(var)
    assert d - lo == pytest.approx(hi - d)


def _restricted_mle_z(only_a: int, only_b: int, n: int, delta: float, correction: float = 0.0) -> float:
    """Tango's score statistic with the restricted MLE found by a dense grid over the likelihood (not his
    closed form): p_b maximizes x_a·log(p_b + delta) + x_b·log(p_b) + x_same·log(1 − 2·p_b − delta)."""
    lo, hi = max(0.0, -delta), (1 - delta) / 2
    grid = np.linspace(lo, hi, 2_000_001)[1:-1]
    same = n - only_a - only_b
    ll = only_a * np.log(grid + delta) + only_b * np.log(grid) + same * np.log(1 - 2 * grid - delta)
    p_b = grid[np.argmax(ll)]
    return (only_a - only_b - n * delta - correction) / math.sqrt(n * (2 * p_b + delta * (1 - delta)))


def _flags(only_a: int, only_b: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.ones(n, bool), np.ones(n, bool)
    a[only_a:only_a + only_b] = False
    b[:only_a] = False
    return a, b


def test_paired_lower_bound_is_tangos_corrected_score_bound() -> None:
    z = 1.6448536  # one-sided 95 %
    # Identical predictions: with x = n·|d|, the corrected statistic (x − 1/2) / sqrt(x (1 − x/n)) = z is a
    # quadratic in x.
    n = 800
    qa, qb = 1 + z * z / n, -(1 + z * z)
    x = (-qb + math.sqrt(qb * qb - qa)) / (2 * qa)
    same = np.ones(n, bool)
    assert paired_lower_bound(same, same) == pytest.approx(-x / n, rel=1e-4)
    # A right on 1 example B misses, wrong on 5 B gets: the bound is where the corrected score test reaches z.
    lb = paired_lower_bound(*_flags(1, 5, n))
    assert _restricted_mle_z(1, 5, n, lb, correction=0.5) == pytest.approx(z, abs=2e-3)
    assert lb < -4 / n  # below the observed difference
    # Fewer examples, same predictions: a wider bound.
    assert paired_lower_bound(same[:100], same[:100]) < -0.03


def _log_trinomial(n: int, c: int, b: int, pc: float, pb: float) -> float:
    out = math.lgamma(n + 1) - math.lgamma(c + 1) - math.lgamma(b + 1) - math.lgamma(n - c - b + 1)
    out += (c * math.log(pc) if c else 0.0) + b * math.log(pb) + (n - c - b) * math.log1p(-pc - pb)
    return out


@pytest.mark.parametrize("n", [200, 300, 800, 1200])
def test_paired_lower_bound_declares_non_inferiority_at_most_5_percent_of_the_time(n: int) -> None:
    """Exact rate, by enumerating the (A-only, B-only) counts: truth exactly `margin` worse for A, a share d of
    examples discordant. As the answer tables use it: declared when A scores below B (else A is the best) and
    the bound is above −margin. Without the continuity correction: up to 5.8 % on this grid (n = 300, 2 points)."""
    worst = 0.0
    for margin in (0.01, 0.02, 0.03):
        for d in (margin, 1.5 * margin, 3 * margin):
            pc, pb = (d - margin) / 2, (d + margin) / 2
            top = int(n * d + 10 * math.sqrt(n * d) + 10)
            total = 0.0
            for m in range(top + 1):
                for c in range((m + 1) // 2):  # c < b
                    if pc == 0 and c > 0:
                        break
                    logp = _log_trinomial(n, c, m - c, pc, pb)
                    if logp < -40:
                        continue
                    if paired_lower_bound(*_flags(c, m - c, n)) > -margin:
                        total += math.exp(logp)
            worst = max(worst, total)
    assert worst <= 0.05
