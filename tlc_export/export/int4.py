"""Weight-only INT4 files (opset-21 block DequantizeLinear) and the fp16 graph conversion.

`onnx-int4` carries the compress stage's 4-bit codes when that stage quantized block-wise with the
export block size; otherwise (per-tensor / per-channel 4-bit, the paper's default) ONNX block
DequantizeLinear cannot express the grid with INT4 codes, so the variant's fake-quant weights are
re-quantized block-wise symmetric here (`requantize_block`) — a different grid, documented in the
result row as `codes: "requantized"`, and validated against a PyTorch model holding exactly those
re-quantized weights (so the logit check stays exact) plus the variant's own accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
import torch

from tlc_export.compress.quantize import QuantConfig, QuantizedTensor, quantize_tensor
from tlc_export.export.onnx_export import InitializerRef
from tlc_export.export.qdq import CodesLike, rewrite_weights

INT4_OPSET = 21


def codes_usable(quantized: Mapping[str, CodesLike], block_size: int, symmetric: bool | None = None) -> bool:
    """True when the compress stage's codes are 4-bit block codes with this block size."""
    qs = [q for q in quantized.values() if len(q.shape) == 2]
    return bool(qs) and all(
        q.bits <= 4 and q.granularity == "block" and q.group_size == block_size
        and (symmetric is None or q.symmetric == symmetric)
        for q in qs
    )


def requantize_block(
    weights: Mapping[str, torch.Tensor], block_size: int, symmetric: bool = True, masks: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, QuantizedTensor]:
    """Block-wise 4-bit codes of every 2-D weight (the compress stage's quantizer, its formula)."""
    cfg = QuantConfig(bits=4, granularity="block", group_size=block_size, symmetric=symmetric)
    out = {}
    for name, w in weights.items():
        if w.dim() != 2 or not torch.is_floating_point(w):
            continue
        q = quantize_tensor(w.float(), cfg, name=name)
        if masks and name in masks:
            q.mask = masks[name].to(torch.bool)
        out[name] = q
    return out


def to_opset21(model: onnx.ModelProto) -> onnx.ModelProto:
    """Block DequantizeLinear and INT4/UINT4 tensors need opset 21."""
    return onnx.version_converter.convert_version(model, INT4_OPSET)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 graph with int64 inputs and fp32 logits (keep_io_types casts at the boundary)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)


def int4_model(
    template: onnx.ModelProto,
    refs: Mapping[str, InitializerRef],
    quantized: Mapping[str, CodesLike],
    dense: Mapping[str, torch.Tensor],
    fp16: bool = False,
    matmul_only: bool = False,
) -> onnx.ModelProto:
    """Opset-21 model whose quantized 2-D weights are INT4/UINT4 codes + block DequantizeLinear.

    `matmul_only` keeps Gather tables in float (TensorRT accepts INT4 only on MatMul/Gemm weights).
    """
    model = to_opset21(template)
    if fp16:
        model = to_fp16(model)
    only = None
    if matmul_only:
        gathers = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
        only = lambda _param, onnx_name: onnx_name not in gathers  # noqa: E731
    rewrite_weights(model, refs, quantized, dense, container="int4", only=only)
    return model
