"""The masked-LM validation loss a compression costs a pretraining checkpoint: `tlc plan` measures it on each
pilot, and the backtest (`tlc plan --check`, the report of a run made from a plan) on the final checkpoint.

One-shot magnitude pruning (no recovery training, the recipe's scope and selection) and the recipe's
quantization grid, evaluated on the pretrain stage's fixed validation batches; the penalty is the increase
over the dense fp32 loss.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from tlc_export.compress.prune import prune_
from tlc_export.compress.quantize import QuantConfig, quantize_
from tlc_export.compress.variants import variant_name
from tlc_export.config.compress import CompressConfig
from tlc_export.pretrain.evaluate import evaluate
from tlc_export.pretrain.loss import MLMLoss


def compressions(cfg: CompressConfig) -> list[tuple[float, int]]:
    """Every (sparsity, bits) the recipe's compress stage makes: dense and each sparsity × 32 and each bits."""
    return [(s, b) for s in [0.0, *cfg.prune.sparsity] for b in [32, *cfg.quantize.bits]]


def compress_(model: nn.Module, cfg: CompressConfig, sparsity: float, bits: int) -> tuple[Any, Any]:
    """Prune (one shot, the recipe's scope and selection) then quantize (the recipe's grid), in place."""
    masks = prune_(model, cfg.prune, sparsity=sparsity) if sparsity > 0 else None
    quantized = quantize_(model, QuantConfig.from_recipe(cfg.quantize, bits), masks=masks) if bits < 32 else None
    return masks, quantized


@torch.no_grad()
def compression_penalties(model: nn.Module, cfg: CompressConfig, val_batches: list[tuple[torch.Tensor, torch.Tensor]],
                          micro_batch_size: int = 16) -> dict[str, dict[str, float]]:
    """{"s30.b4": {sparsity, bits, val_loss, penalty}} for every compression of the recipe (dense fp32 included)."""
    out: dict[str, dict[str, float]] = {}
    base = None
    for sparsity, bits in compressions(cfg):
        m = copy.deepcopy(model).eval()
        compress_(m, cfg, sparsity, bits)
        loss = evaluate(MLMLoss(m, masked_only=False), val_batches, torch.device("cpu"), None, micro_batch_size).loss
        if base is None:
            base = loss
        key = variant_name("", sparsity, bits).lstrip(".")
        out[key] = {"sparsity": sparsity, "bits": bits, "val_loss": loss, "penalty": loss - base}
    return out
