"""The plan's curve fit: recovers known parameters, its 90 % interval covers at its rate, and it says when a
curve cannot be extrapolated."""

from __future__ import annotations

import numpy as np
import pytest

from tlc_export.plan.fit import fit_curve, fit_many, schedule_area, trust_problems

X = np.linspace(1, 10, 10)  # a pilot's 10 evaluation points; x* = 100 extrapolates 10×


def noisy_curves(rng: np.random.Generator, draws: int, e: float, a: float, alpha: float, sigma: float,
                 x: np.ndarray = X) -> tuple[np.ndarray, np.ndarray]:
    """`draws` synthetic pilots: L(x) = e + a·x^(-alpha) at x plus independent N(0, sigma²) noise per point.
    Returns (x, y), both [draws, len(x)]. Also the generator of the plan's decision simulations (test_calibration)."""
    xs = np.tile(x, (draws, 1))
    return xs, e + a * xs ** -alpha + rng.normal(0, sigma, xs.shape)


def test_recovers_known_parameters_and_the_interval_holds_the_truth() -> None:
    x = np.linspace(1, 10, 12)
    rng = np.random.default_rng(1)
    y = 2.0 + 3.0 * x ** -0.5 + rng.normal(0, 0.002, x.size)
    f = fit_curve(x, y, x_star=100.0)
    assert f.E == pytest.approx(2.0, abs=0.05) and f.A == pytest.approx(3.0, abs=0.1)
    assert f.alpha == pytest.approx(0.5, abs=0.05)
    truth = 2.0 + 3.0 * 100.0 ** -0.5
    lo, hi = f.interval
    assert lo < truth < hi and lo < f.predicted < hi
    assert hi - lo < 0.05  # informative, not a blanket
    assert f.trustworthy and f.reasons == []


def test_noisier_points_give_a_wider_interval() -> None:
    x = np.linspace(1, 10, 12)
    rng = np.random.default_rng(2)
    clean = 2.0 + 3.0 * x ** -0.5
    e = rng.normal(0, 1, x.size)
    narrow = fit_curve(x, clean + 0.002 * e, 100.0)
    wide = fit_curve(x, clean + 0.02 * e, 100.0)
    assert (wide.interval[1] - wide.interval[0]) > 3 * (narrow.interval[1] - narrow.interval[0])


def test_interval_covers_at_its_stated_rate_on_500_noisy_curves() -> None:
    """600 synthetic curves (10 points, 10× extrapolation): a fresh noisy measurement at x* falls inside the
    90 % interval 90 % of the time (binomial SE 1.2 %: the band is ±4 SE)."""
    rng = np.random.default_rng(0)
    d, e, a, alpha, sigma, x_star = 600, 2.0, 3.0, 0.5, 0.01, 100.0
    x, y = noisy_curves(rng, d, e, a, alpha, sigma)
    r = fit_many(x, y, x_star, level=0.9)
    measured = e + a * x_star ** -alpha + rng.normal(0, sigma, d)
    coverage = float(np.mean((r["lo"] <= measured) & (measured <= r["hi"])))
    assert 0.85 <= coverage <= 0.95, coverage
    # The 50 % interval is narrower and covers about half as often: the level is honoured, not fixed.
    r50 = fit_many(x, y, x_star, level=0.5)
    c50 = float(np.mean((r50["lo"] <= measured) & (measured <= r50["hi"])))
    assert 0.42 <= c50 <= 0.58, c50


def test_untrustworthy_curves_are_flagged() -> None:
    x = np.linspace(1, 10, 10)
    assert any("too few" in r for r in trust_problems(x[:3], 3 - 0.1 * x[:3]))
    straight = 5.0 - 0.2 * x  # still falling as fast as ever: no bend yet
    assert any("not bending" in r for r in trust_problems(x, straight))
    rising = 2.0 + 3.0 * x ** -0.5
    rising[6:] += np.linspace(0.3, 0.6, 4)
    assert any("non-monotone" in r for r in trust_problems(x, rising))
    assert not fit_curve(x, straight, 100.0).trustworthy


def test_schedule_area_matches_the_closed_form() -> None:
    # Linear warm-up over 10 s then linear decay to 0 at 100 s: area at 100 s = 5 + 45 = 50 s at peak lr.
    def lr(t: float) -> float:
        return t / 10 if t < 10 else (100 - t) / 90

    got = schedule_area(lr, 1.0, np.array([10.0, 100.0]))
    assert got == pytest.approx([5.0, 50.0], rel=1e-3)
