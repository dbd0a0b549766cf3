"""Masked-LM loss as one module (so DDP and torch.compile see the whole computation).

With `masked_only=True` the vocabulary head runs only on the positions that carry a label
(~15 %): gather their hidden states, then `model.lm_head`. The loss is identical to projecting
every position, at a fraction of the head's cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import RobertaPreLayerNormForMaskedLM

from tlc_export.data.mlm import IGNORE_INDEX


class MLMLoss(nn.Module):
    """forward(input_ids, labels) -> summed token loss (fp32); divide by the masked-token count."""

    def __init__(self, model: RobertaPreLayerNormForMaskedLM, masked_only: bool = True) -> None:
        super().__init__()
        self.model = model
        self.masked_only = masked_only

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.masked_only:
            logits = self.model(input_ids=input_ids).logits
            return F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
                ignore_index=IGNORE_INDEX, reduction="sum",
            )
        hidden = self.model.roberta_prelayernorm(input_ids=input_ids).last_hidden_state
        flat_labels = labels.reshape(-1)
        picked = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)
        logits = self.model.lm_head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, picked))
        return F.cross_entropy(logits.float(), flat_labels.index_select(0, picked), reduction="sum")


def mlm_loss(
    model: RobertaPreLayerNormForMaskedLM, input_ids: torch.Tensor, labels: torch.Tensor, masked_only: bool = True
) -> torch.Tensor:
    """Mean loss over the labelled positions (what `model(input_ids, labels=labels).loss` returns)."""
    total = MLMLoss(model, masked_only)(input_ids, labels)
    return total / (labels != IGNORE_INDEX).sum().clamp_min(1)
