"""Constraint filtering and the recommendation of `tlc plan`, and its errors for impossible limits."""

from __future__ import annotations

import pytest

from tlc_export.plan.choose import Candidate, PlanError, filter_candidates, recommend


def cand(size: str, comp: str, loss: float, width: float, mb: float, ms: float, trust: bool = True) -> Candidate:
    return Candidate(size, comp, f"{size}.{comp}", loss, (loss - width, loss + width), 0.0, int(mb * 1e6), ms, trust)


GRID = [
    cand("2L", "s00.b32", 5.0, 0.05, 4.0, 1.0), cand("2L", "s00.b4", 5.1, 0.05, 0.6, 1.0),
    cand("4L", "s00.b32", 4.5, 0.05, 12.0, 3.0), cand("4L", "s00.b4", 4.6, 0.05, 1.6, 3.0),
    cand("4L", "s60.b4", 4.8, 0.05, 0.9, 3.0),
]


def test_limits_filter_exactly_and_the_best_fitting_one_wins() -> None:
    assert {c.variant for c in filter_candidates(GRID, 1.0, None)} == {"2L.s00.b4", "4L.s60.b4"}
    assert {c.variant for c in filter_candidates(GRID, None, 2.0)} == {"2L.s00.b32", "2L.s00.b4"}
    assert {c.variant for c in filter_candidates(GRID, 1.6, 3.0)} == {"2L.s00.b4", "4L.s00.b4", "4L.s60.b4"}  # ≤ is in
    r = recommend(GRID, max_storage_mb=1.0)
    assert r.best.variant == "4L.s60.b4" and r.runner_up.variant == "2L.s00.b4" and r.distinguishable is True
    assert recommend(GRID).best.variant == "4L.s00.b32"
    assert recommend(GRID, max_latency_ms=2.0).runner_up is None


def test_overlapping_or_untrustworthy_sizes_are_not_told_apart() -> None:
    close = [cand("2L", "s00.b32", 5.0, 0.3, 4.0, 1.0), cand("4L", "s00.b32", 4.9, 0.3, 12.0, 3.0)]
    r = recommend(close)
    assert r.best.size == "4L" and r.distinguishable is False and "too close" in r.note
    shaky = [cand("2L", "s00.b32", 5.0, 0.01, 4.0, 1.0), cand("4L", "s00.b32", 4.0, 0.01, 12.0, 3.0, trust=False)]
    assert recommend(shaky).distinguishable is False


def test_impossible_limits_name_the_option_and_by_how_much() -> None:
    with pytest.raises(PlanError, match=r"--max-storage-mb 0.5: .*2L\.s00\.b4, needs 0\.600 MB.*\+0\.100 MB"):
        recommend(GRID, max_storage_mb=0.5)
    with pytest.raises(PlanError, match=r"--max-latency-ms 0.5: .*2L, measured 1\.000 ms.*\+0\.500 ms"):
        recommend(GRID, max_latency_ms=0.5)
    with pytest.raises(PlanError, match=r"both limits.*--max-storage-mb 0\.5.*\+0\.100 MB.*--max-latency-ms"):
        recommend([cand("2L", "s00.b32", 5.0, 0.1, 0.6, 1.0), cand("4L", "s60.b4", 4.0, 0.1, 0.4, 3.0)],
                  max_storage_mb=0.5, max_latency_ms=2.0)


def test_sizes_without_a_fit_are_left_out_and_none_at_all_is_an_error() -> None:
    nan = float("nan")
    unfit = Candidate("8L", "s00.b32", "8L.s00.b32", nan, (nan, nan), 0.0, 1, 0.1, False)
    assert recommend([*GRID, unfit]).best.variant == "4L.s00.b32"
    with pytest.raises(PlanError, match="raise --pilot-fraction or --budget-s"):
        recommend([unfit])
