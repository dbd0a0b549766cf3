"""Masked-LM data: full-sentence packing, dynamic masking and a resumable shuffled batch stream."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100


def pack_sequences(ids: np.ndarray, seq_len: int, bos_id: int, eos_id: int) -> np.ndarray:
    """Cut a flat token stream into rows of `<s>` + (seq_len - 2) tokens + `</s>`.

    RoBERTa's FULL-SENTENCES packing: rows cross document boundaries (documents in `ids` are
    already separated by `eos_id`), so no padding is needed; the tail that does not fill a row
    is dropped.
    """
    if seq_len < 3:
        raise ValueError(f"seq_len must be at least 3 (bos + 1 token + eos), got {seq_len}")
    ids = np.asarray(ids).reshape(-1)
    body = seq_len - 2
    n = len(ids) // body
    rows = np.empty((n, seq_len), dtype=np.int32)
    rows[:, 0] = bos_id
    rows[:, -1] = eos_id
    rows[:, 1:-1] = ids[: n * body].reshape(n, body)
    return rows


class PackedRows:
    """The rows of `pack_sequences(ids, ...)`, cut on demand from a flat token array.

    `ids` is typically a read-only `np.memmap` of a token file: indexing reads only the requested
    rows' tokens, so every process can share one file without loading it. Supports `len()`,
    `.shape`, and indexing by an int, a slice or an integer array; returns int32 arrays.
    """

    def __init__(self, ids: np.ndarray, seq_len: int, bos_id: int, eos_id: int) -> None:
        if seq_len < 3:
            raise ValueError(f"seq_len must be at least 3 (bos + 1 token + eos), got {seq_len}")
        self.ids = ids
        self.seq_len = seq_len
        self.body = seq_len - 2
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.n_rows = len(ids) // self.body
        self._offsets = np.arange(self.body, dtype=np.int64)

    def __len__(self) -> int:
        return self.n_rows

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.seq_len)

    @property
    def tokens(self) -> int:
        """Tokens inside the rows (the tail that does not fill a row is dropped)."""
        return self.n_rows * self.body

    def row_starts(self, rows: np.ndarray) -> np.ndarray:
        """Token offset of each row's first body token."""
        return np.asarray(rows, dtype=np.int64) * self.body

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            rows = np.arange(self.n_rows)[index]
        else:
            rows = np.asarray(index, dtype=np.int64)
        single = rows.ndim == 0
        rows = rows.reshape(-1)
        rows = np.where(rows < 0, rows + self.n_rows, rows)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise IndexError(f"row index out of range for {self.n_rows} packed rows")
        out = np.empty((len(rows), self.seq_len), dtype=np.int32)
        out[:, 0] = self.bos_id
        out[:, -1] = self.eos_id
        # One gather per batch; on a memmap only the pages of these rows are touched.
        out[:, 1:-1] = self.ids[self.row_starts(rows)[:, None] + self._offsets]
        return out[0] if single else out


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT dynamic masking; returns new (inputs, labels), labels = -100 where not selected.

    Of the selected tokens 80% become `<mask>`, 10% a random non-special token, 10% stay.
    Special tokens (bos/eos/pad, ...) are never selected.
    """
    device = input_ids.device
    inputs = input_ids.clone()
    labels = input_ids.clone().long()
    special = torch.tensor(sorted(set(int(s) for s in special_ids)), dtype=input_ids.dtype, device=device)
    is_special = torch.isin(input_ids, special)

    def rand(shape: torch.Size) -> torch.Tensor:
        # Draw on the generator's device, then move: a CPU generator works for CUDA inputs too.
        gdev = generator.device if generator is not None else device
        return torch.rand(shape, generator=generator, device=gdev).to(device)

    selected = (rand(input_ids.shape) < probability) & ~is_special
    labels[~selected] = IGNORE_INDEX

    r = rand(input_ids.shape)
    to_mask = selected & (r < 0.8)
    to_random = selected & (r >= 0.8) & (r < 0.9)
    inputs[to_mask] = mask_token_id

    n_random = int(to_random.sum())
    if n_random:
        # Sample uniformly among non-special ids by drawing an index into the allowed set.
        allowed = torch.ones(vocab_size, dtype=torch.bool)
        allowed[[s for s in special_ids if 0 <= s < vocab_size]] = False
        allowed_ids = torch.nonzero(allowed).squeeze(1)
        gdev = generator.device if generator is not None else torch.device("cpu")
        pick = torch.randint(len(allowed_ids), (n_random,), generator=generator, device=gdev).cpu()
        inputs[to_random] = allowed_ids[pick].to(device=device, dtype=inputs.dtype)
    return inputs, labels


class MLMBatches:
    """Micro-batches of packed rows, reshuffled every epoch, resumable from `position`.

    The order of epoch `e` is a permutation seeded by (seed, e), so the stream is a pure function
    of (rows, batch_size, seed) and `position` (rows consumed) is enough to resume exactly.
    """

    def __init__(self, rows: np.ndarray | PackedRows, batch_size: int, seed: int, start: int = 0) -> None:
        if len(rows) == 0:
            raise ValueError("no packed rows: the corpus is shorter than one sequence")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rows = rows
        self.batch_size = batch_size
        self.seed = seed
        self.position = int(start)
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    @property
    def epoch(self) -> float:
        return self.position / len(self.rows)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def next_indices(self) -> np.ndarray:
        """Row indices of the next batch; a batch may straddle two epochs."""
        n = len(self.rows)
        out = []
        need = self.batch_size
        while need:
            epoch, offset = divmod(self.position, n)
            take = min(need, n - offset)
            out.append(self._order(epoch)[offset : offset + take])
            self.position += take
            need -= take
        return np.concatenate(out)

    def next_batch(self) -> torch.Tensor:
        """A CPU int64 tensor [batch_size, seq_len] of packed rows."""
        return torch.from_numpy(self.rows[self.next_indices()].astype(np.int64))

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next_batch()
