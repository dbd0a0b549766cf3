"""Feeding packed rows to the device off the training step's critical path.

The data side hands over one CPU integer tensor `[batch, seq_len]` per step (`next_rows`) and
reports how many rows it has consumed (`position`). `BatchFeed` takes this rank's rows
`rows[rank::world]`, and on CUDA prepares the next batches in a background thread: page-locked
(pinned) host memory and an asynchronous copy on a dedicated copy stream, so the copy overlaps the
previous step's kernels. The consumer's stream waits for the copy's event before using the rows
(`wait_event`), and `record_stream` tells the caching allocator the rows are used on that stream.
On the CPU there is nothing to overlap and the feed is synchronous unless `background=True`.

Each batch travels with the data position right after it, so a checkpoint records the position of
the last batch *trained on*, not of the batches prepared ahead.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import torch

_STOP_POLL_S = 0.1


class BatchFeed:
    """`feed.next()` → (this rank's rows on `device`, data position after them); `close()` at the end."""

    def __init__(
        self,
        next_rows: Callable[[], torch.Tensor],
        position: Callable[[], int],
        device: torch.device,
        *,
        rank: int = 0,
        world_size: int = 1,
        depth: int = 2,
        background: bool | None = None,
    ) -> None:
        self.next_rows = next_rows
        self.position = position
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.cuda = device.type == "cuda"
        self.background = self.cuda if background is None else background
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._copy_stream = torch.cuda.Stream(device) if self.cuda else None
        if self.background:
            self._thread = threading.Thread(target=self._produce, name="tlc-batch-feed", daemon=True)
            self._thread.start()

    def _take(self) -> tuple[torch.Tensor, int]:
        rows = self.next_rows()
        pos = int(self.position())
        return rows[self.rank :: self.world_size].contiguous(), pos

    def _prepare(self) -> tuple[torch.Tensor, int, Any]:
        rows, pos = self._take()
        if not self.cuda:
            return rows, pos, None
        pinned = rows.pin_memory()
        with torch.cuda.stream(self._copy_stream):
            on_device = pinned.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self._copy_stream)
        return on_device, pos, (ready, pinned)  # the pinned buffer lives until the copy is waited for

    def _produce(self) -> None:
        try:
            if self.cuda:
                torch.cuda.set_device(self.device)
            while not self._stop.is_set():
                item = ("ok", self._prepare())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=_STOP_POLL_S)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._queue.put(("error", exc))

    def next(self) -> tuple[torch.Tensor, int]:
        if not self.background:
            rows, pos, sync = self._prepare()
        else:
            kind, payload = self._queue.get()
            if kind == "error":
                raise payload
            rows, pos, sync = payload
        if sync is not None:
            ready, _pinned = sync
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            rows.record_stream(current)
        return rows, pos

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a producer waiting for room
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=_STOP_POLL_S)
            self._thread = None

    def __enter__(self) -> BatchFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
