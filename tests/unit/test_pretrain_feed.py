"""BatchFeed: rows prepared ahead in a background thread arrive in order, with the position of each."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from tlc_export.data.mlm import MLMBatches
from tlc_export.pretrain.feed import BatchFeed

CPU = torch.device("cpu")


def _batches() -> MLMBatches:
    rows = np.arange(50 * 4, dtype=np.int32).reshape(50, 4)
    return MLMBatches(rows, batch_size=6, seed=1)


@pytest.mark.parametrize("background", [False, True])
def test_feed_hands_over_this_ranks_rows_in_order_with_their_positions(background: bool) -> None:
    ref = _batches()
    expected = [(ref.next_batch(), ref.position) for _ in range(12)]
    src = _batches()
    with BatchFeed(src.next_batch, lambda: src.position, CPU, rank=1, world_size=2, depth=3, background=background) as feed:
        got = [feed.next() for _ in range(12)]
        if background:
            # The producer runs ahead, but each batch carries the position right after *it*.
            assert src.position >= got[-1][1]
    for (rows, pos), (full, full_pos) in zip(got, expected, strict=True):
        assert torch.equal(rows, full[1::2]) and pos == full_pos
    assert not any(t.name == "tlc-batch-feed" for t in threading.enumerate())


def test_feed_reraises_the_producers_error_and_stops() -> None:
    calls = []

    def broken() -> torch.Tensor:
        calls.append(1)
        if len(calls) > 2:
            raise OSError("data/train_ids.npy: read failed")
        return torch.zeros(2, 4, dtype=torch.long)

    feed = BatchFeed(broken, lambda: len(calls), CPU, background=True)
    feed.next()
    feed.next()
    with pytest.raises(OSError, match="read failed"):
        feed.next()
    feed.close()
    assert not any(t.name == "tlc-batch-feed" for t in threading.enumerate())
