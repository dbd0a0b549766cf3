"""Validation perplexity on a fixed, seeded sample of validation rows drawn across every source,
masked once, so every point of every size is comparable."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tlc_export.data.mlm import IGNORE_INDEX, mask_tokens
from tlc_export.pretrain.loss import MLMLoss
from tlc_export.pretrain.step import MaskSpec, autocast

# Different from any training mask seed, so validation masks never coincide with training ones.
_EVAL_MASK_SEED = 1_000_003
# The row sample has its own stream too: changing it does not change the masks.
_EVAL_SAMPLE_SEED = 2_000_003


@dataclass(frozen=True)
class ValidationSample:
    """Which validation rows are evaluated, in evaluation order, and where they come from."""

    indices: np.ndarray  # row indices into the validation rows
    batch_size: int
    seed: int
    available_rows: int
    rows_per_source: dict[str, int] = field(default_factory=dict)
    available_per_source: dict[str, int] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What pretrain/results.json keeps about the sample."""
        return {
            "seed": self.seed, "rows": int(len(self.indices)), "of_rows": self.available_rows,
            "batch_size": self.batch_size, "batches": -(-len(self.indices) // self.batch_size),
            "rows_per_source": dict(self.rows_per_source), "available_per_source": dict(self.available_per_source),
            "method": "stratified by source (proportional, at least one row per source), seeded, without replacement",
        }


def _allocate(count: int, available: np.ndarray) -> np.ndarray:
    """Rows per stratum: proportional to `available` (largest remainder), at least 1 where possible."""
    alloc = np.zeros(len(available), dtype=np.int64)
    present = np.flatnonzero(available > 0)
    if count >= available.sum():
        return available.copy()
    floor_one = present[: count]  # one row per source first, when there are more sources than rows
    alloc[floor_one] = 1
    left = count - len(floor_one)
    if left > 0:
        room = available - alloc
        share = left * room / room.sum()
        extra = np.minimum(np.floor(share).astype(np.int64), room)
        rest = left - extra.sum()
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        for i in order:
            if rest == 0:
                break
            if extra[i] < room[i]:
                extra[i] += 1
                rest -= 1
        alloc += extra
    return alloc


def validation_sample(
    n_rows: int, row_sources: np.ndarray | None, labels: list[str], count: int, batch_size: int, seed: int
) -> ValidationSample:
    """A fixed random sample of `count` validation rows (all if fewer), stratified by source.

    `row_sources[r]` is the `data.sources` index of row r (None: one source). Each source gets rows
    in proportion to its share of the validation split, and at least one, so a small source is
    never left out; rows are drawn without replacement and then shuffled, so each batch mixes sources.
    """
    sources = np.zeros(n_rows, dtype=np.int64) if row_sources is None else np.asarray(row_sources, dtype=np.int64)
    names = labels if labels else ["all"]
    n_src = max(len(names), int(sources.max()) + 1 if n_rows else 1)
    available = np.bincount(sources, minlength=n_src)
    rng = np.random.default_rng([seed, _EVAL_SAMPLE_SEED])
    alloc = _allocate(min(count, n_rows), available)
    chosen = [rng.choice(np.flatnonzero(sources == s), size=int(a), replace=False)
              for s, a in enumerate(alloc) if a > 0]
    indices = rng.permutation(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)

    def label(i: int) -> str:
        return names[i] if i < len(names) else f"source {i}"

    return ValidationSample(
        indices=indices.astype(np.int64), batch_size=batch_size, seed=seed, available_rows=int(n_rows),
        rows_per_source={label(i): int(a) for i, a in enumerate(alloc)},
        available_per_source={label(i): int(a) for i, a in enumerate(available)},
    )


def fixed_val_batches(
    rows: Any, indices: np.ndarray, batch_size: int, mask: MaskSpec, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The sampled rows in batches of `batch_size`, masked once with a seeded generator."""
    gen = torch.Generator().manual_seed(seed + _EVAL_MASK_SEED)
    out = []
    for start in range(0, len(indices), batch_size):
        ids = torch.from_numpy(np.asarray(rows[indices[start : start + batch_size]]).astype(np.int64))
        out.append(
            mask_tokens(
                ids, mask_token_id=mask.mask_token_id, vocab_size=mask.vocab_size,
                special_ids=mask.special_ids, probability=mask.probability, generator=gen,
            )
        )
    return out


@dataclass(frozen=True)
class Validation:
    """One evaluation: the mean masked-LM loss and its per-batch parts, in batch order.

    `loss == math.fsum(loss_sums) / sum(token_counts)`; the lists let a report bootstrap over batches.
    """

    loss: float
    ppl: float
    loss_sums: list[float]  # summed masked-token loss of each validation batch
    token_counts: list[int]  # masked tokens of each validation batch


@torch.no_grad()
def evaluate(
    loss_module: MLMLoss,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    dtype: torch.dtype | None,
    micro_batch_size: int,
) -> Validation:
    """Masked-LM loss over all masked tokens of `batches`, perplexity = exp(loss), and per-batch sums."""
    was_training = loss_module.training
    loss_module.eval()
    sums: list[float] = []
    counts: list[int] = []
    try:
        for inputs, labels in batches:
            total, count = 0.0, 0
            for x, y in zip(inputs.split(micro_batch_size), labels.split(micro_batch_size), strict=True):
                x, y = x.to(device), y.to(device)
                with autocast(device, dtype):
                    total += float(loss_module(x, y))
                count += int((y != IGNORE_INDEX).sum())
            sums.append(total)
            counts.append(count)
    finally:
        loss_module.train(was_training)
    loss = math.fsum(sums) / max(sum(counts), 1)
    return Validation(loss=loss, ppl=math.exp(min(loss, 700.0)), loss_sums=sums, token_counts=counts)
