"""The time-driven learning-rate schedule."""

from __future__ import annotations

import pytest

from tlc_export.pretrain.schedule import lr_at


def test_warmup_peak_then_zero_at_budget() -> None:
    peak, budget = 1e-3, 100.0
    assert lr_at(6.0, budget, peak, 0.06) == pytest.approx(peak)
    assert lr_at(3.0, budget, peak, 0.06) == pytest.approx(peak / 2)
    assert lr_at(53.0, budget, peak, 0.06) == pytest.approx(peak / 2)
    assert lr_at(budget, budget, peak, 0.06) == 0.0
    assert lr_at(budget + 5, budget, peak, 0.06) == 0.0
    assert 0 < lr_at(0.0, budget, peak, 0.06) < peak * 0.01  # first step still moves the weights
    values = [lr_at(t, budget, peak, 0.06) for t in range(6, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_no_warmup_decays_from_peak() -> None:
    assert lr_at(0.0, 10.0, 2.0, 0.0) == pytest.approx(2.0)
    assert lr_at(5.0, 10.0, 2.0, 0.0) == pytest.approx(1.0)
