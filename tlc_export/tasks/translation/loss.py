"""Label-smoothed cross-entropy (Szegedy et al.; ε = 0.1 in the paper), summed over target tokens.

torch's `cross_entropy(label_smoothing=ε)` is the loss against the target distribution
(1 − ε)·one-hot + ε/V·uniform, which is the Transformer's label smoothing. Sums, not means: a
step's micro-batches hold different token counts, so the trainer divides the summed loss by the
step's total target tokens (every token weighs the same, whatever batch it fell in).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # label of padding positions (transformers' convention)


@dataclass(frozen=True)
class TokenLoss:
    smoothed: torch.Tensor  # summed label-smoothed loss (what the optimizer minimises)
    nll: torch.Tensor  # summed negative log-likelihood of the references (dev loss, perplexity)
    tokens: torch.Tensor  # target tokens counted (padding excluded)


def label_smoothed_loss(logits: torch.Tensor, labels: torch.Tensor, epsilon: float) -> TokenLoss:
    """logits [batch, length, vocab], labels [batch, length] with IGNORE at padding."""
    flat, target = logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1)
    smoothed = F.cross_entropy(flat, target, ignore_index=IGNORE, reduction="sum", label_smoothing=epsilon)
    with torch.no_grad():
        nll = F.cross_entropy(flat, target, ignore_index=IGNORE, reduction="sum")
    return TokenLoss(smoothed, nll, (target != IGNORE).sum())


def teacher_forced_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                          forward: torch.nn.Module | None = None) -> torch.Tensor:
    """Logits for every target position, the decoder reading the references shifted right behind its start
    token (the model's own `prepare_decoder_input_ids_from_labels`). Labels are not passed to the model, so
    it does not compute a second, unsmoothed loss over the vocabulary. `forward`: the module to call (a
    DistributedDataParallel wrapper of `model`), default `model` itself."""
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
    return (forward if forward is not None else model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 decoder_input_ids=decoder_input_ids).logits
