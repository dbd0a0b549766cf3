"""Latency statistics, timing loops, peak memory and the environment a measurement ran in."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tlc_export.rundir import environment as run_environment

# p90/p50 above this means the runs were noisy (other load, frequency scaling, GC): flag the row.
SPREAD_THRESHOLD = 1.2


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q={q} is outside 0..100")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class LatencyStats:
    """Per-call latency summary in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    runs: int

    @property
    def spread_flag(self) -> bool:
        return self.p50 > 0 and self.p90 / self.p50 > SPREAD_THRESHOLD

    def throughput(self, batch: int) -> float:
        """Sequences per second; the mean (total work / total time), not p50, is what a stream sees."""
        return batch * 1000.0 / self.mean if self.mean > 0 else float("nan")

    def as_row(self, prefix: str = "latency_ms_") -> dict[str, float]:
        d = asdict(self)
        d.pop("runs")
        return {f"{prefix}{k}": v for k, v in d.items()}


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats:
    if not samples_ms:
        raise ValueError("no latency samples")
    return LatencyStats(
        p50=percentile(samples_ms, 50),
        p90=percentile(samples_ms, 90),
        p99=percentile(samples_ms, 99),
        mean=sum(samples_ms) / len(samples_ms),
        min=min(samples_ms),
        max=max(samples_ms),
        runs=len(samples_ms),
    )


def time_calls(
    fn: Callable[[], Any],
    sync: Callable[[], None],
    warmup: int,
    runs: int,
    cuda: bool = False,
) -> list[float]:
    """Milliseconds per call of `fn`, after `warmup` untimed calls.

    On CUDA each call is bracketed by CUDA events, which time the GPU work itself rather than the
    host's launch queue; on CPU `perf_counter_ns` around the call and its `sync`.
    """
    for _ in range(warmup):
        fn()
    sync()
    out: list[float] = []
    if cuda:
        import torch

        for _ in range(runs):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(float(start.elapsed_time(end)))
        return out
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        sync()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


SETTLE_S = 0.05  # untimed calls at the start of a turn: longer than ONNX Runtime's idle-thread spinning
TURN_S = 0.1  # then timed calls for this long (at least `min_per_turn`): many calls when each is short


def interleaved_turns(
    calls: Mapping[str, Callable[[], Any]],
    rounds: int,
    warmup_rounds: int = 3,
    settle_s: float = SETTLE_S,
    turn_s: float = TURN_S,
    min_per_turn: int = 3,
    turns: dict[str, list[list[float]]] | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[str, list[float]]:
    """Milliseconds per call of each of `calls`, timed in turns: every round gives each call one turn, in
    an order rotated by one per round (so load from other processes, and whatever ran just before, hits
    all of them alike). A turn is `settle_s` of untimed calls, then `turn_s` of timed ones.

    The untimed start is why this exists: after a call, ONNX Runtime's idle intra-op threads keep
    spinning for a while (its default, kept, as a serving process has it), and in one process they take
    the cores from whichever session runs next. Timing one call of each session in turn measures that
    contention: on 2 cores it made a 1.5 ms batch-1 call read up to 5× slower, unevenly across files.
    The first `warmup_rounds` rounds are not kept. `turns`, when given, also gets each kept turn's
    samples per call, one list per round, so rounds can be paired across calls (`paired_ratios`).
    `clock` (nanoseconds) is what turns and samples are measured with; tests pass a fake one.
    """
    names = list(calls)
    samples: dict[str, list[float]] = {k: [] for k in names}
    for r in range(warmup_rounds + rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            fn = calls[k]
            t_end = clock() + settle_s * 1e9
            while True:
                fn()
                if clock() >= t_end:
                    break
            t_end, n = clock() + turn_s * 1e9, 0
            turn: list[float] = []
            while n < min_per_turn or clock() < t_end:
                t0 = clock()
                fn()
                n += 1
                turn.append((clock() - t0) / 1e6)
            if r >= warmup_rounds:
                samples[k].extend(turn)
                if turns is not None:
                    turns.setdefault(k, []).append(turn)
    return samples


def paired_ratios(turns: Mapping[str, Sequence[Sequence[float]]], base: str) -> dict[str, tuple[float, float, float]]:
    """Per call: the median over rounds of (its turn's median ÷ `base`'s turn median in the same round),
    with the median's distribution-free 95 % interval (`tlc_export.stats.median_interval`). Turns of one
    round run back to back, so load that comes and goes hits both sides of each ratio alike; the
    interval says whether a ratio is beyond the machine's noise."""
    from tlc_export.stats import median_interval

    ref = [statistics.median(t) for t in turns[base]]
    out = {}
    for k, ts in turns.items():
        ratios = [statistics.median(t) / b for t, b in zip(ts, ref, strict=True)]
        out[k] = median_interval(ratios)
    return out


# --- memory ---------------------------------------------------------------------------------


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size, from /proc (Linux); None elsewhere."""
    kib = _proc_status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) so the next peak belongs to what follows.

    Writing "5" to clear_refs is the documented way (Linux >= 4.0); returns False where not allowed.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    kib = _proc_status_kib("VmHWM")
    return None if kib is None else kib * 1024


class PeakMemory:
    """Peak memory a block adds on top of what was in use when it started.

    CUDA: `max_memory_allocated` during the block minus `memory_allocated` at its start (the
    caching allocator's peak is reset on entry), so weights loaded before and whatever earlier
    backends left behind are excluded: torch backends only (runtimes with allocators of their own
    use `DeviceMemory`). CPU: bytes the process's peak RSS rose above its RSS at entry
    (activations, ORT arenas).
    """

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.bytes: int | None = None
        self._base = 0

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            reset_peak_rss()
            self._base = rss_bytes() or 0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.bytes = max(0, int(torch.cuda.max_memory_allocated()) - self._base)
        else:
            peak = peak_rss_bytes()
            self.bytes = None if peak is None else max(0, peak - self._base)


class DeviceMemory:
    """Device memory a block adds, from the driver: `cudaMemGetInfo` used bytes after minus before (device
    synchronized both times). For runtimes with their own allocator (ONNX Runtime's arena, TensorRT): what
    their warm-up and timed runs grow it by (an arena keeps what it grew to, so after = its peak). Memory
    reserved when the model loaded (a TensorRT context's activations) is in `model_mem_bytes`, not here,
    so nothing is counted twice."""

    def __init__(self, used: Callable[[], int | None] | None = None, sync: Callable[[], None] | None = None) -> None:
        self._used = used or device_used_bytes
        self._sync = sync or _cuda_sync
        self.bytes: int | None = None
        self._base: int | None = None

    def __enter__(self) -> DeviceMemory:
        self._sync()
        self._base = self._used()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        after = self._used()
        self.bytes = None if after is None or self._base is None else max(0, after - self._base)


def _cuda_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_used_bytes() -> int | None:
    """Bytes in use on the current CUDA device by every allocator (torch, TensorRT, ONNX Runtime), from
    the driver (`cudaMemGetInfo`); None without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return int(total - free)
    except Exception:  # noqa: BLE001 - a broken driver must not stop a measurement
        return None


# --- environment ----------------------------------------------------------------------------


def environment(threads: int | None = None) -> dict[str, Any]:
    """Where the numbers came from: CPU, threads, GPU, driver and library versions."""
    # The stage record's versions and CPU, plus what a timing needs: cores, threads, GPU details.
    env: dict[str, Any] = {**run_environment(), "cpu_count": os.cpu_count(), "threads": threads}
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda_runtime"] = torch.version.cuda
            env["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
            env["driver"] = nvidia_driver()
    except Exception as exc:  # CUDA probing can fail on broken drivers; the rest is still useful
        env["cuda_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import onnxruntime as ort

        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    return env


def nvidia_driver() -> str | None:
    p = Path("/proc/driver/nvidia/version")
    try:
        first = p.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    for tok in first.split():
        if tok[:1].isdigit() and "." in tok:
            return tok
    return first
