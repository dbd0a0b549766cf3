"""The training clock of a budgeted run: from the end of one step to the end of the next, less the pauses.

A size's budget is spent on everything that keeps the accelerator from the next step, not only on
the step's own kernels: waiting on the data feed, the progress bar, the DDP broadcast of the
elapsed time and the FLOP bookkeeping all count. Timing only the step function would favour small
sizes (whose steps are short beside that overhead) and hide data stalls. Only evaluation and
checkpoints (and set-up such as a compile after an out-of-memory retry) are paused out: they are
the same work whichever size trains, and are not training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


class TrainingClock:
    """Laps of training seconds read from `read` (a monotonic clock; a seam for tests)."""

    def __init__(self, read: Callable[[], float]) -> None:
        self._read = read
        self._mark: float | None = None
        self._paused = 0.0

    def start(self) -> None:
        """The first lap begins now (after the warm-up, just before the first step is fetched)."""
        self._mark = self._read()
        self._paused = 0.0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Seconds spent inside this block are taken off the current lap."""
        t0 = self._read()
        try:
            yield
        finally:
            self._paused += self._read() - t0

    def lap(self) -> float:
        """At the end of a step: the training seconds since the end of the previous one (or `start`)."""
        if self._mark is None:
            raise RuntimeError("TrainingClock.lap() before start()")
        now = self._read()
        seconds = max(0.0, now - self._mark - self._paused)
        self._mark, self._paused = now, 0.0
        return seconds
