"""Masked-LM loss as one module (so DDP and torch.compile see the whole computation).

With `masked_only=True` the vocabulary head runs only on the masked positions (~15 %): gather
their hidden states, then `model.lm_head`. The loss is identical to projecting every position,
at a fraction of the head's cost.

Static shapes: with `capacity=k` the head gathers exactly k positions per row, found with
`topk` over the label mask (a fixed-size op: no `.nonzero()`, no host sync, one compiled graph).
Rows with fewer than k masked tokens fill their quota with unmasked positions whose label is
-100, which `cross_entropy` ignores, so the sum is exactly the sum over masked tokens as long as
no row has more than k of them. Training masks exactly k per row (`DeviceMasker`), so that holds by
construction. `capacity=None` sizes k from the batch (one host sync): for evaluation batches
masked on the CPU, whose count per row varies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import RobertaPreLayerNormForMaskedLM

from tlc_export.data.mlm import IGNORE_INDEX


class MLMLoss(nn.Module):
    """forward(input_ids, labels) -> summed token loss (fp32); divide by the masked-token count."""

    def __init__(
        self, model: RobertaPreLayerNormForMaskedLM, masked_only: bool = True, capacity: int | None = None
    ) -> None:
        super().__init__()
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be ≥ 1 masked positions per row, got {capacity}")
        self.model = model
        self.masked_only = masked_only
        self.capacity = capacity

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.masked_only:
            logits = self.model(input_ids=input_ids).logits
            return F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
                ignore_index=IGNORE_INDEX, reduction="sum",
            )
        hidden = self.model.roberta_prelayernorm(input_ids=input_ids).last_hidden_state
        masked = labels != IGNORE_INDEX
        k = self.capacity if self.capacity is not None else int(masked.sum(1).max().clamp_min(1))
        k = min(k, labels.shape[1])
        pos = masked.to(torch.float32).topk(k, dim=1, sorted=False).indices  # [batch, k]
        picked = hidden.gather(1, pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        logits = self.model.lm_head(picked)
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), labels.gather(1, pos).reshape(-1),
            ignore_index=IGNORE_INDEX, reduction="sum",
        )


def mlm_loss(
    model: RobertaPreLayerNormForMaskedLM,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    masked_only: bool = True,
    capacity: int | None = None,
) -> torch.Tensor:
    """Mean loss over the labelled positions (what `model(input_ids, labels=labels).loss` returns)."""
    total = MLMLoss(model, masked_only, capacity)(input_ids, labels)
    return total / (labels != IGNORE_INDEX).sum().clamp_min(1)
