"""Latency statistics and measurement helpers of runtime_bench.metrics."""

from __future__ import annotations

import numpy as np
import pytest

from runtime_bench.metrics import PeakMemory, environment, latency_stats, percentile, time_calls


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_percentiles_match_numpy_linear_interpolation(n: int) -> None:
    rng = np.random.default_rng(n)
    xs = rng.lognormal(size=n).tolist()
    for q in (0, 1, 50, 90, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-12)
    st = latency_stats(xs)
    assert st.p50 == pytest.approx(np.median(xs))
    assert st.mean == pytest.approx(np.mean(xs))
    assert (st.min, st.max) == (min(xs), max(xs))


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_spread_flag_and_throughput() -> None:
    steady = latency_stats([10.0] * 9 + [11.0])
    assert not steady.spread_flag
    noisy = latency_stats([10.0] * 6 + [14.0] * 4)  # p50 = 10, p90 = 14
    assert noisy.spread_flag
    assert steady.throughput(32) == pytest.approx(32 * 1000 / steady.mean)


def test_time_calls_measures_the_call_and_its_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake nanosecond clock: each call of fn takes 5 ms of it, each sync 1 ms; warm-up calls are not timed."""
    import types

    import runtime_bench.metrics as metrics

    now = [0]
    monkeypatch.setattr(metrics, "time", types.SimpleNamespace(perf_counter_ns=lambda: now[0]))
    calls = []

    def fn() -> None:
        calls.append(1)
        now[0] += 5_000_000

    def sync() -> None:
        now[0] += 1_000_000

    samples = time_calls(fn, sync, warmup=2, runs=4)
    assert len(calls) == 6 and samples == [6.0] * 4


def test_peak_memory_sees_a_large_allocation() -> None:
    with PeakMemory() as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        block.sum()
    del block
    if mem.bytes is None:
        pytest.skip("/proc/self/status not readable on this OS")
    assert mem.bytes >= 48 * 2**20


def test_environment_records_versions_and_threads() -> None:
    env = environment(threads=2)
    assert env["threads"] == 2 and env["torch"] and env["onnxruntime"] and env["cpu"]
