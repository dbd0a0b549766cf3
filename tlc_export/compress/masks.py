"""Pruning masks (name -> bool tensor, True = kept): apply them and measure sparsity."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from tlc_export.errors import TlcError


class MaskError(TlcError, ValueError):
    """A mask does not fit the model it is applied to."""


def bind_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Pair each mask with its parameter (bool mask on the parameter's device), checking names and shapes."""
    params = dict(model.named_parameters(remove_duplicate=False))
    out = []
    for name, m in masks.items():
        if name not in params:
            raise MaskError(f"mask for {name!r}: the model has no such parameter (masks are keyed by parameter name)")
        p = params[name]
        if tuple(m.shape) != tuple(p.shape):
            raise MaskError(f"mask for {name!r} has shape {tuple(m.shape)}, the parameter {tuple(p.shape)}")
        out.append((p, m.to(device=p.device, dtype=torch.bool)))
    return out


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned (False) positions of each named parameter in place."""
    for p, m in bind_masks(model, masks):
        p.data.masked_fill_(~m, 0.0)


def masks_from_zeros(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Masks (True = nonzero) for `names` (default: every parameter) of a model whose pruning is permanent."""
    params = dict(model.named_parameters())
    wanted = list(params) if names is None else list(names)
    return {n: params[n].detach() != 0 for n in wanted}


def mask_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of pruned positions over the masked tensors."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum().item()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0


def model_sparsity(model: nn.Module, names: Iterable[str] | None = None) -> float:
    """Fraction of exact zeros over `names` (default: every parameter, tied ones once)."""
    params = dict(model.named_parameters())
    wanted = list(params) if names is None else list(names)
    total = sum(params[n].numel() for n in wanted)
    zeros = sum(int((params[n] == 0).sum().item()) for n in wanted)
    return zeros / total if total else 0.0
