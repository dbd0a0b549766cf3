"""Validation perplexity on fixed batches with fixed masks, so every point of every size is comparable."""

from __future__ import annotations

import math

import numpy as np
import torch

from tlc_export.data.mlm import IGNORE_INDEX, mask_tokens
from tlc_export.pretrain.loss import MLMLoss
from tlc_export.pretrain.step import MaskSpec, _autocast

# Different from any training mask seed, so validation masks never coincide with training ones.
_EVAL_MASK_SEED = 1_000_003


def fixed_val_batches(
    rows: np.ndarray, n_batches: int, batch_size: int, mask: MaskSpec, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `n_batches × batch_size` validation rows (fewer if the split is small), masked once."""
    n = min(len(rows), n_batches * batch_size)
    gen = torch.Generator().manual_seed(seed + _EVAL_MASK_SEED)
    out = []
    for start in range(0, n, batch_size):
        ids = torch.from_numpy(rows[start : start + batch_size].astype(np.int64))
        out.append(
            mask_tokens(
                ids, mask_token_id=mask.mask_token_id, vocab_size=mask.vocab_size,
                special_ids=mask.special_ids, probability=mask.probability, generator=gen,
            )
        )
    return out


@torch.no_grad()
def evaluate(
    loss_module: MLMLoss,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    dtype: torch.dtype | None,
    micro_batch_size: int,
) -> tuple[float, float]:
    """(mean masked-LM loss, perplexity = exp(loss)) over all masked tokens of `batches`."""
    was_training = loss_module.training
    loss_module.eval()
    total, count = 0.0, 0
    try:
        for inputs, labels in batches:
            for x, y in zip(inputs.split(micro_batch_size), labels.split(micro_batch_size), strict=True):
                x, y = x.to(device), y.to(device)
                with _autocast(device, dtype):
                    total += float(loss_module(x, y))
                count += int((y != IGNORE_INDEX).sum())
    finally:
        loss_module.train(was_training)
    loss = total / max(count, 1)
    return loss, math.exp(min(loss, 700.0))
