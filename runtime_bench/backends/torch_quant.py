"""INT8 (W8A8 dynamic) and INT4 (weight-only, tinygemm) Linear replacements from core PyTorch ops.

INT8: weights quantized per output channel (symmetric) and stored column-major, because
`torch._int_mm` is ~7x faster on CUDA when its second operand is column-major; activations are
quantized per row on the fly; int32 accumulation, then both scales applied in fp32.
INT4: `aten._convert_weight_to_int4pack` + `aten._weight_int4pack_mm` (tinygemm), bf16 activations,
asymmetric groups along K with w = (q - 8) * scale + zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# `torch._int_mm` on CUDA requires more than 16 rows in its first operand.
_INT_MM_MIN_ROWS = 17


@dataclass
class Int8Config:
    """Which Linear layers get INT8 weights; the classifier's output projection stays float by default."""

    skip: tuple[str, ...] = ("classifier.out_proj",)


@dataclass
class Int4Config:
    group_size: int = 128
    inner_k_tiles: int = 8
    skip: tuple[str, ...] = ("classifier.out_proj",)


@dataclass
class Replaced:
    """What a replacement pass did, for the result row."""

    replaced: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # Linear layers whose shape the kernel can't take


class Int8Linear(nn.Module):
    """y = (round(x / s_x) @ Wq^T) * s_x * s_w + b with int8 operands and int32 accumulation."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        # q is [out, in] row-major, so q.t() is [in, out] column-major: the layout _int_mm wants.
        self.register_buffer("weight_q", q)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_q.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float()
        s = x2.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
        xq = torch.round(x2 / s).clamp(-127, 127).to(torch.int8)
        rows = xq.shape[0]
        if rows < _INT_MM_MIN_ROWS:
            xq = torch.nn.functional.pad(xq, (0, 0, 0, _INT_MM_MIN_ROWS - rows))
        acc = torch._int_mm(xq, self.weight_q.t())[:rows]
        y = acc.float() * s * self.weight_scale
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)


class Int4WeightOnlyLinear(nn.Module):
    """bf16 activations times a 4-bit grouped weight through tinygemm."""

    def __init__(self, linear: nn.Linear, group_size: int = 128, inner_k_tiles: int = 8) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        n, k = w.shape
        if not int4_eligible(n, k, group_size, inner_k_tiles):
            raise ValueError(f"Linear [{n}, {k}] does not fit int4 tinygemm (group {group_size}, tiles {inner_k_tiles})")
        self.in_features, self.out_features = k, n
        self.group_size, self.inner_k_tiles = group_size, inner_k_tiles
        wg = w.reshape(n, k // group_size, group_size)
        wmin, wmax = wg.amin(-1), wg.amax(-1)
        scale = ((wmax - wmin) / 15.0).clamp(min=1e-6)
        q = torch.round((wg - wmin[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32).reshape(n, k)
        zero = wmin + 8.0 * scale  # tinygemm's zero is the value of the middle code 8
        # [K/group, N, 2]: (scale, zero) pairs, group-major, as _weight_int4pack_mm expects.
        sz = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        self.register_buffer("scales_and_zeros", sz)
        # Host copy of the codes (a plain attribute, not a buffer: .to("cuda") leaves it on the CPU, so
        # the GPU holds only the packed weight): re-packing after a move, and the reference dequantization.
        self.codes = q.to(torch.uint8).cpu()
        self.register_buffer("packed", self._pack(q))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def _pack(self, q: torch.Tensor) -> torch.Tensor:
        if q.is_cuda:
            # CUDA takes uint8 [N, K/2], two codes per byte, even column in the high nibble.
            u8 = ((q[:, ::2] << 4) | q[:, 1::2]).to(torch.uint8)
            return torch.ops.aten._convert_weight_to_int4pack(u8, self.inner_k_tiles)
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, self.inner_k_tiles)

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module signature
        super()._apply(fn, recurse)
        # .to(dtype)/.half() would cast the scales, and the packed layout is device-specific:
        # restore bf16 scales and re-pack from the codes on whatever device they now live.
        self.scales_and_zeros = self.scales_and_zeros.to(torch.bfloat16)
        self.packed = self._pack(self.codes.to(self.packed.device, torch.int32))
        return self

    def dequantized_weight(self) -> torch.Tensor:
        sz = self.scales_and_zeros.float().transpose(0, 1)  # [N, K/group, 2]
        q = self.codes.to(sz.device).float().reshape(self.out_features, -1, self.group_size)
        w = (q - 8.0) * sz[..., 0:1] + sz[..., 1:2]
        return w.reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if x2.is_cuda:
            y = torch.ops.aten._weight_int4pack_mm(x2, self.packed, self.group_size, self.scales_and_zeros)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed, self.group_size, self.scales_and_zeros)
        y = y.float()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)


def int8_eligible(n: int, k: int) -> bool:
    return n % 8 == 0 and k % 8 == 0


def int4_eligible(n: int, k: int, group_size: int = 128, inner_k_tiles: int = 8) -> bool:
    return n % 8 == 0 and k % group_size == 0 and k % (inner_k_tiles * 16) == 0


def _replace(model: nn.Module, skip: tuple[str, ...], eligible, build) -> Replaced:  # noqa: ANN001
    done = Replaced()
    for name, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            if type(child) is not nn.Linear:
                continue
            full = f"{name}.{child_name}" if name else child_name
            n, k = child.weight.shape
            if any(full.endswith(s) for s in skip) or not eligible(n, k):
                done.kept.append(full)
                continue
            setattr(mod, child_name, build(child))
            done.replaced.append(full)
    return done


def quantize_linears_int8_(model: nn.Module, cfg: Int8Config) -> Replaced:
    """Swap every eligible nn.Linear for an Int8Linear, in place."""
    return _replace(model, cfg.skip, int8_eligible, Int8Linear)


def quantize_linears_int4_(model: nn.Module, cfg: Int4Config) -> Replaced:
    """Swap every eligible nn.Linear for an Int4WeightOnlyLinear, in place."""
    return _replace(
        model,
        cfg.skip,
        lambda n, k: int4_eligible(n, k, cfg.group_size, cfg.inner_k_tiles),
        lambda lin: Int4WeightOnlyLinear(lin, cfg.group_size, cfg.inner_k_tiles),
    )
