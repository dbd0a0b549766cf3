"""The paper's uniform k-bit weight quantizer (§4.2), plus per-channel / block / symmetric variants.

Paper (`QuantConfig`'s default: asymmetric, per-tensor):

    q0 = min W,  q_{2^k-1} = max W,  Δ = (q_{2^k-1} - q0) / (2^k - 1)
    W_I = round((clamp(W, q0, q_{2^k-1}) - q0) / Δ)          codes in 0 .. 2^k - 1
    Quantize(W) = Δ · W_I + q0

Rounding is `torch.round`, i.e. round half to even (IEEE default, same as `numpy.round`); the paper's
⌊·⌉ does not specify ties and ties are measure-zero for trained weights. The arithmetic runs in
float64 so that codes do not depend on float32 rounding of Δ; scale and offset are then stored as
float32 and `dequantize()` evaluates `scale * codes + offset` in float32.

Integer zero point (`integer_zero_point`, asymmetric only; the recipe's default, `compress.quantize.zero_point`,
because it is the form deployed kernels take): where a group's range holds 0 (every trained
weight matrix), q0 moves to the nearest multiple of Δ, q0' = −z·Δ with z = round(−q0/Δ) in 0 .. 2^k − 1,
and the codes are taken on that grid (clamped to 0 .. 2^k − 1). Δ is unchanged and |q0' − q0| ≤ Δ/2, so
the error stays ≤ Δ/2 (a value the moved range no longer covers is within Δ/2 of its end). A range
without 0 (a LayerNorm gain, say) has no integer zero point on its own span and keeps q0. This is the
form integer kernels take (ONNX Runtime's DynamicQuantizeMatMul and QAttention, TensorRT):
W = Δ·(W_I − z) exactly, so an exported file needs no rank-1 term for the fractional part of −q0/Δ
(`tlc_export.export.integer`).

Symmetric (TensorRT's form): Δ = max|W| / (2^(k-1) - 1), codes = clamp(round(W / Δ)) in
-(2^(k-1)-1) .. 2^(k-1)-1 (the most negative code is unused so the grid is symmetric), offset 0.
Exact zeros stay exactly zero.

Granularity chooses what one (Δ, q0) pair covers: the whole tensor, one row (dim 0 of the torch
weight: a Linear's output channel, an Embedding's token row), or a block of `group_size` along the
last dim (a Linear's input dim K); the last block of a row may be shorter. 1-D parameters (biases,
LayerNorm) are always per-tensor: a per-channel range of a vector is one fp32 scale *per element*,
i.e. no compression, and runtimes (ONNX block DequantizeLinear, TensorRT) block-quantize only
MatMul/Gather weights; they are < 0.1 % of the parameters, so this costs nothing measurable.

Pruned weights: the paper's grid generally contains no exact 0, so after quantization the pruning
mask is re-applied; pruned positions are represented by the mask, not by a code.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from tlc_export.errors import TlcError

if TYPE_CHECKING:
    from tlc_export.config.compress import QuantizeConfig

Granularity = Literal["per-tensor", "per-channel", "block"]
GRANULARITIES: tuple[str, ...] = ("per-tensor", "per-channel", "block")


class QuantizationError(TlcError, ValueError):
    """A tensor or setting cannot be quantized; the message names the parameter or field and the fix."""


@dataclass(frozen=True)
class QuantConfig:
    """One quantization setting: the recipe's `compress.quantize` plus one chosen bit width."""

    bits: int = 8
    granularity: Granularity = "per-tensor"
    group_size: int = 32
    symmetric: bool = False
    integer_zero_point: bool = False  # asymmetric: q0 on a multiple of Δ (see the module docstring)
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    matrices_only: bool = False  # quantize only parameters with ≥ 2 dims (biases, LayerNorm stay float)

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 8):
            raise QuantizationError(
                f"compress.quantize.bits: {self.bits!r} is not a bit width between 2 and 8 "
                "(32 means 'not quantized': do not call the quantizer for it)"
            )
        if self.granularity not in GRANULARITIES:
            raise QuantizationError(
                f"compress.quantize.granularity: {self.granularity!r} is not one of {', '.join(GRANULARITIES)}"
            )
        if self.group_size < 2:
            raise QuantizationError(f"compress.quantize.group_size: {self.group_size} must be >= 2")
        if self.symmetric and self.integer_zero_point:
            raise QuantizationError(
                "compress.quantize.zero_point: 'integer' applies to the asymmetric grid; a symmetric grid's zero "
                "point is 0 already (drop zero_point or set symmetric: false)"
            )
        # Accept lists from callers but keep the dataclass hashable.
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @classmethod
    def from_recipe(cls, qcfg: QuantizeConfig, bits: int) -> QuantConfig:
        return cls(
            bits=bits,
            granularity=qcfg.granularity,
            group_size=qcfg.group_size,
            symmetric=qcfg.symmetric,
            # the recipe's default (integer) is for asymmetric grids; a symmetric grid has zero point 0 already
            integer_zero_point=qcfg.zero_point == "integer" and not qcfg.symmetric,
            include=tuple(qcfg.include),
            exclude=tuple(qcfg.exclude),
        )

    @classmethod
    def tensorrt_int4(cls, qcfg: QuantizeConfig, block: int) -> QuantConfig:
        """The grid TensorRT's INT4 weight-only path takes: signed symmetric 4-bit codes in blocks of
        `block` along the input dim, on weight matrices only (the recipe's include/exclude still apply)."""
        return cls(bits=4, granularity="block", group_size=block, symmetric=True,
                   include=tuple(qcfg.include), exclude=tuple(qcfg.exclude), matrices_only=True)

    def selects(self, name: str) -> bool:
        """True when parameter `name` matches an include glob and no exclude glob."""
        inc = any(fnmatch.fnmatchcase(name, p) for p in self.include)
        return inc and not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)


@dataclass
class QuantizedTensor:
    """Integer codes plus the grid that maps them back to floats: value = scale * codes + offset.

    `scale`/`offset` broadcast to `shape`: per-tensor `[]`, per-channel `[rows, 1, ...]`, block
    `[*leading, ceil(cols / group_size)]` (expanded along the last dim by `dequantize`).
    `mask` (True = kept), when set, zeroes pruned positions in `dequantize()`; pruned positions hold
    `zero_codes()` (the grid point nearest 0, exactly 0 when symmetric), so a consumer that ignores
    the mask is off by at most Δ/2 there.
    """

    codes: torch.Tensor  # uint8 (asymmetric, 0..2^k-1) or int8 (symmetric, ±(2^(k-1)-1))
    scale: torch.Tensor  # float32, Δ
    offset: torch.Tensor  # float32, q0 (0 when symmetric)
    bits: int
    granularity: Granularity
    group_size: int
    symmetric: bool
    shape: tuple[int, ...] = field(default=())
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not self.shape:
            self.shape = tuple(self.codes.shape)

    def expanded_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, offset) broadcastable to `shape` (blocks repeated along the last dim)."""
        scale, offset = self.scale, self.offset
        if self.granularity == "block" and len(self.shape) >= 2:
            cols = self.shape[-1]
            scale = scale.repeat_interleave(self.group_size, dim=-1)[..., :cols]
            offset = offset.repeat_interleave(self.group_size, dim=-1)[..., :cols]
        return scale, offset

    def dequantize(self) -> torch.Tensor:
        scale, offset = self.expanded_grid()
        out = scale * self.codes.to(torch.float32) + offset
        if self.mask is not None:
            out = out.masked_fill(~self.mask.to(torch.bool), 0.0)
        return out

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def zero_codes(self) -> torch.Tensor:
        """Per position, the code nearest to 0 on its grid: what a pruned (zero) weight maps to.

        Pruned positions carry this code (computed from the stored float32 grid) so that codes
        read back from an artifact, where only kept codes are stored, equal the in-memory ones.
        """
        if self.symmetric:
            return torch.zeros(self.shape, dtype=torch.int8)
        scale, offset = self.expanded_grid()
        z = torch.round(-offset.double() / scale.double()).clamp_(0, 2**self.bits - 1)
        return z.expand(self.shape).to(torch.uint8)

    def set_mask_(self, mask: torch.Tensor) -> None:
        """Attach a pruning mask (True = kept) and give pruned positions the zero code."""
        self.mask = mask.to(torch.bool)
        self.codes = torch.where(self.mask, self.codes, self.zero_codes().to(self.codes.device))


def _effective_granularity(w: torch.Tensor, cfg: QuantConfig) -> Granularity:
    return "per-tensor" if w.dim() < 2 else cfg.granularity


def _groups(w: torch.Tensor, gran: Granularity, group: int) -> torch.Tensor:
    """View `w` as [..., n] where each slice along the last dim shares one (Δ, q0)."""
    if gran == "per-tensor":
        return w.reshape(1, -1)
    if gran == "per-channel":
        return w.reshape(w.shape[0], -1)
    cols = w.shape[-1]
    nb = -(-cols // group)
    pad = nb * group - cols
    if pad:
        # Pad with the row's last value: it cannot change a block's min/max (the padding is dropped again).
        w = torch.cat([w, w[..., -1:].expand(*w.shape[:-1], pad)], dim=-1)
    return w.reshape(*w.shape[:-1], nb, group)


def _grid_shape(w: torch.Tensor, gran: Granularity, group: int) -> tuple[int, ...]:
    if gran == "per-tensor":
        return ()
    if gran == "per-channel":
        return (w.shape[0],) + (1,) * (w.dim() - 1)
    return (*w.shape[:-1], -(-w.shape[-1] // group))


def quantize_tensor(w: torch.Tensor, cfg: QuantConfig, name: str = "<tensor>") -> QuantizedTensor:
    """Quantize one tensor with the paper's formula (see the module docstring); `w` is not changed."""
    if not torch.is_floating_point(w):
        raise QuantizationError(f"{name}: dtype {w.dtype} is not floating point; exclude it from compress.quantize.include")
    if w.numel() == 0:
        raise QuantizationError(f"{name}: empty tensor cannot be quantized; exclude it with compress.quantize.exclude")
    if not bool(torch.isfinite(w).all()):
        bad = int((~torch.isfinite(w)).sum())
        raise QuantizationError(
            f"parameter {name!r} has {bad} non-finite value(s) (NaN/inf): the checkpoint is corrupt or "
            "training diverged; retrain/finetune with a lower learning rate, or exclude it with compress.quantize.exclude"
        )
    gran = _effective_granularity(w, cfg)
    # A private float64 copy: the ops below work in place on it to keep passes over large embeddings few.
    g = _groups(w.detach().to(torch.float64, copy=True), gran, cfg.group_size)
    if cfg.symmetric:
        qmax = 2 ** (cfg.bits - 1) - 1
        delta = g.abs().amax(dim=-1, keepdim=True) / qmax
        # All-zero group: any positive Δ reproduces it exactly.
        delta = torch.where(delta > 0, delta, torch.ones_like(delta))
        codes = g.div_(delta).round_().clamp_(-qmax, qmax)
        q0 = torch.zeros_like(delta)
        code_dtype = torch.int8
    else:
        levels = 2**cfg.bits - 1
        q0, qn = torch.aminmax(g, dim=-1, keepdim=True)
        delta = (qn - q0) / levels
        # Constant group (Δ = 0): all codes 0 and offset = the constant reproduce it exactly.
        constant = delta == 0
        delta = torch.where(constant, torch.ones_like(delta), delta)
        if cfg.integer_zero_point:
            # q0' = −z·Δ where the range holds 0 (then z = round(−q0/Δ) is in 0 .. 2^k − 1). A range without 0
            # has no integer zero point on its own span, and a constant group is exact with q0 = its value:
            # both keep q0.
            movable = ~constant & (q0 <= 0) & (qn >= 0)
            q0 = torch.where(movable, -torch.round(-q0 / delta) * delta, q0)
        # The paper's Clamp(W, q0, q_{2^k-1}) is the identity here (the range is W's own min/max),
        # so it is not materialised; the final clamp only guards the top code against Δ's rounding.
        codes = g.sub_(q0).div_(delta).round_().clamp_(0, levels)
        code_dtype = torch.uint8
    if gran == "block":
        codes = codes.reshape(*w.shape[:-1], -1)[..., : w.shape[-1]]
    codes = codes.reshape(w.shape).to(code_dtype)
    gshape = _grid_shape(w, gran, cfg.group_size)
    return QuantizedTensor(
        codes=codes.contiguous(),
        scale=delta.reshape(gshape).to(torch.float32),
        offset=q0.reshape(gshape).to(torch.float32),
        bits=cfg.bits,
        granularity=gran,
        group_size=cfg.group_size,
        symmetric=cfg.symmetric,
        shape=tuple(w.shape),
    )


def canonical_names(model: nn.Module) -> dict[str, str]:
    """Map every parameter name, tied aliases included, to the name `named_parameters()` reports."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        out[n] = first.setdefault(id(p), n)
    return out


def _canonical_masks(model: nn.Module, masks: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    if not masks:
        return {}
    alias = canonical_names(model)
    out: dict[str, torch.Tensor] = {}
    for n, m in masks.items():
        if n not in alias:
            raise QuantizationError(f"mask for {n!r}: the model has no such parameter; masks must be keyed by parameter name")
        out[alias[n]] = m.to(torch.bool)
    return out


@torch.no_grad()
def quantize_(
    model: nn.Module,
    cfg: QuantConfig,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, QuantizedTensor]:
    """Fake-quantize `model` in place: every selected parameter becomes its dequantized value.

    Activations are untouched (the paper). Tied parameters (lm_head ↔ embeddings) are quantized once
    under their first name. With `masks` (name -> bool, True = kept), pruned positions are re-zeroed
    after quantization and the mask is attached to the returned `QuantizedTensor`.
    Returns `{parameter name: QuantizedTensor}` for the quantized parameters.
    """
    cmasks = _canonical_masks(model, masks)
    out: dict[str, QuantizedTensor] = {}
    for name, p in model.named_parameters():  # remove_duplicate=True: a tied weight appears once
        if not cfg.selects(name) or (cfg.matrices_only and p.dim() < 2):
            continue
        m = cmasks.get(name)
        if m is None:
            q = quantize_tensor(p.data, cfg, name=name)
        else:
            if tuple(m.shape) != tuple(p.shape):
                raise QuantizationError(f"mask for {name!r} has shape {tuple(m.shape)}, the parameter {tuple(p.shape)}")
            m = m.to(p.device)
            # The range is that of the pruned weights (pruned positions are 0, as in the paper's prune-then-quantize).
            q = quantize_tensor(p.data.masked_fill(~m, 0.0), cfg, name=name)
            q.set_mask_(m)
        p.data.copy_(q.dequantize().to(p.dtype))
        out[name] = q
    return out


def quantization_error(w: torch.Tensor, cfg: QuantConfig) -> torch.Tensor:
    """|W - Quantize(W)| elementwise (float32)."""
    return (w.detach().float() - quantize_tensor(w, cfg).dequantize()).abs()
