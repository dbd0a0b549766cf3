"""Weight-only INT4 files (opset-21 DequantizeLinear of 4-bit codes) and the fp16 graph conversion.

`onnx-int4` carries the compress stage's 4-bit codes on the artifact's own grid, whatever it is:
per-tensor / per-channel asymmetric (the paper's default) as UINT4 `DequantizeLinear` followed by
`Add(q0)`, block symmetric as INT4 block `DequantizeLinear` (see `qdq.py`), so the file computes the
variant's model. `tensorrt-int4` takes only TensorRT's grid (symmetric INT4, blocks of 64/128, on
MatMul/Gemm weights; Gather tables in fp16): `tensorrt_int4_ready` says whether an artifact is on it.
Nothing here re-quantizes: a grid the format cannot hold is a different variant, made by the compress
stage (`….b4.sym-g64`).
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
import torch

from tlc_export.export.onnx_export import InitializerRef
from tlc_export.export.qdq import WEIGHT_SLOTS, CodesLike, rewrite_weights

INT4_OPSET = 21
TENSORRT_INT4_BLOCKS = (64, 128)


def tensorrt_int4_ready(quantized: Mapping[str, CodesLike]) -> bool:
    """True when every quantized weight matrix is symmetric INT4 in blocks TensorRT accepts."""
    qs = [q for q in quantized.values() if len(q.shape) == 2]
    return bool(qs) and all(
        q.bits <= 4 and q.symmetric and q.granularity == "block" and q.group_size in TENSORRT_INT4_BLOCKS for q in qs
    )


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
    slots: frozenset[tuple[str, int]] | set[tuple[str, int]] = WEIGHT_SLOTS,
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
    rewrite_weights(model, refs, quantized, dense, container="int4", only=only, slots=slots)
    return model
