"""Packing, dynamic masking statistics and the resumable batch stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlc_export.data.mlm import IGNORE_INDEX, MLMBatches, mask_tokens, pack_sequences

SPECIALS = (0, 1, 2, 3, 4)
MASK = 4
VOCAB = 300


def test_pack_sequences_rows_are_consecutive_with_bos_eos():
    ids = np.arange(10, 10 + 1000, dtype=np.int32)
    rows = pack_sequences(ids, seq_len=32, bos_id=0, eos_id=2)
    assert rows.shape == (1000 // 30, 32) and rows.dtype == np.int32
    assert (rows[:, 0] == 0).all() and (rows[:, -1] == 2).all()
    assert np.array_equal(rows[:, 1:-1].ravel(), ids[: rows.shape[0] * 30])
    assert pack_sequences(ids[:20], 32, 0, 2).shape == (0, 32)
    with pytest.raises(ValueError):
        pack_sequences(ids, 2, 0, 2)


def test_masking_statistics_and_specials():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(5, VOCAB, (400, 128), generator=g)
    x[:, 0], x[:, -1] = 0, 2  # bos / eos
    x[::7, 60:] = 1  # padding
    original = x.clone()
    inputs, labels = mask_tokens(x, mask_token_id=MASK, vocab_size=VOCAB, special_ids=SPECIALS, generator=g)
    assert torch.equal(x, original)  # the argument is not modified

    special = torch.isin(x, torch.tensor(SPECIALS))
    selected = labels != IGNORE_INDEX
    assert not (selected & special).any()
    assert torch.equal(inputs[special], x[special])
    assert torch.equal(labels[selected], x[selected])
    assert torch.equal(inputs[~selected], x[~selected])

    frac = selected.sum().item() / (~special).sum().item()
    assert abs(frac - 0.15) < 0.005
    n = selected.sum().item()
    masked = (inputs == MASK) & selected
    kept = (inputs == x) & selected
    randomized = selected & ~masked & ~kept
    assert abs(masked.sum().item() / n - 0.8) < 0.015
    # A random replacement equals the original 1/295 of the time and then counts as kept.
    assert abs(kept.sum().item() / n - 0.1) < 0.015
    assert abs(randomized.sum().item() / n - 0.1) < 0.015
    assert not torch.isin(inputs[randomized], torch.tensor(SPECIALS)).any()
    assert int(inputs.max()) < VOCAB


def test_masking_is_reproducible_with_a_generator():
    x = torch.randint(5, VOCAB, (8, 32))
    a = mask_tokens(x, mask_token_id=MASK, vocab_size=VOCAB, special_ids=SPECIALS, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(x, mask_token_id=MASK, vocab_size=VOCAB, special_ids=SPECIALS, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_batches_cover_each_epoch_once_and_reshuffle():
    rows = np.arange(40, dtype=np.int32).reshape(20, 2)
    it = MLMBatches(rows, batch_size=5, seed=1)
    epoch0 = torch.cat([it.next_batch() for _ in range(4)])[:, 0].tolist()
    epoch1 = torch.cat([it.next_batch() for _ in range(4)])[:, 0].tolist()
    assert sorted(epoch0) == sorted(epoch1) == list(range(0, 40, 2))
    assert epoch0 != epoch1 and epoch0 != sorted(epoch0)
    assert it.position == 40 and it.epoch == 2.0


def test_batches_resume_exactly_from_position():
    rows = np.arange(3 * 17, dtype=np.int32).reshape(17, 3)  # batches straddle epochs
    full = MLMBatches(rows, batch_size=4, seed=7)
    stream = iter(full)
    first = [next(stream) for _ in range(6)]
    pos = full.position
    rest = [next(stream) for _ in range(6)]
    resumed = MLMBatches(rows, batch_size=4, seed=7, start=pos)
    assert pos == 24
    for a, b in zip(rest, (resumed.next_batch() for _ in range(6)), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], MLMBatches(rows, 4, seed=8).next_batch())
