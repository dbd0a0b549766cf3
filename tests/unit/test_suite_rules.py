"""Rules the test suite keeps (see the README's Tests section), checked on its own source.

- No `or` inside an assertion: `assert x is None or check(x)` passes when x is dropped; say which case
  is expected instead.
- No real clock: a loaded 2-core machine makes any wall-clock window flaky. Training loops run on a
  step-driven fake clock and budgets are asserted as step counts; waits are joins, not sleeps.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
CLOCK_CALLS = {("time", "time"), ("time", "perf_counter"), ("time", "perf_counter_ns"), ("time", "monotonic"),
               ("time", "monotonic_ns"), ("time", "sleep"), ("threading", "Timer")}


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text())) for p in sorted(TESTS.rglob("*.py"))]


def test_no_or_in_assertions() -> None:
    bad = [f"{p.relative_to(TESTS)}:{node.lineno}" for p, tree in _sources() for node in ast.walk(tree)
           if isinstance(node, ast.Assert)
           and any(isinstance(x, ast.BoolOp) and isinstance(x.op, ast.Or) for x in ast.walk(node.test))]
    assert bad == []


def test_no_wall_clock_in_tests() -> None:
    bad = []
    for p, tree in _sources():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and (node.value.id, node.attr) in CLOCK_CALLS):
                bad.append(f"{p.relative_to(TESTS)}:{node.lineno} {node.value.id}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module in ("time", "threading"):
                names = {(node.module, a.name) for a in node.names}
                bad += [f"{p.relative_to(TESTS)}:{node.lineno} from {m} import {n}" for m, n in names & CLOCK_CALLS]
    assert bad == []
