"""The Pareto frontier of (cost, accuracy) points: less cost and more accuracy are both better."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def _first(p: Any) -> float:
    return float(p[0])


def _second(p: Any) -> float:
    return float(p[1])


def pareto_frontier(
    points: Sequence[T],
    x: Callable[[T], float] = _first,
    y: Callable[[T], float] = _second,
) -> list[T]:
    """Points no other point dominates (x <= and y >= with one strict), sorted by x ascending.

    Along the result x increases and y strictly increases: the upper-left staircase. Of points
    with identical (x, y) the first given is kept. NaN coordinates are ignored.
    """
    clean = [(i, p) for i, p in enumerate(points) if x(p) == x(p) and y(p) == y(p)]
    clean.sort(key=lambda ip: (x(ip[1]), -y(ip[1]), ip[0]))
    out: list[T] = []
    best = float("-inf")
    for _, p in clean:
        if y(p) > best:
            out.append(p)
            best = y(p)
    return out


def best_within(
    points: Sequence[T],
    budget: float,
    x: Callable[[T], float] = _first,
    y: Callable[[T], float] = _second,
) -> T | None:
    """The most accurate point with cost <= budget (ties: the cheaper one); None if none fits."""
    fits = [p for p in points if x(p) <= budget and y(p) == y(p)]
    if not fits:
        return None
    return max(fits, key=lambda p: (y(p), -x(p)))


def geometric_budgets(lo: float, hi: float, n: int = 5) -> list[float]:
    """n budgets spaced geometrically from lo to hi inclusive (one when lo == hi)."""
    if lo <= 0 or hi <= 0:
        raise ValueError(f"budgets need positive bounds, got {lo}..{hi}")
    if n <= 1 or hi <= lo:
        return [hi]
    r = (hi / lo) ** (1 / (n - 1))
    return [lo * r**i for i in range(n - 1)] + [hi]
