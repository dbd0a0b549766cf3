"""Structural check of an ONNX file against TensorRT's documented explicit-quantization rules.

Nothing here can run TensorRT, so the rules are checked on the graph itself (FIELD-NOTES "TensorRT"):
- Q/DQ zero points absent or all 0 (symmetric only);
- INT8: activations quantized per tensor (scalar scale), weights per channel or per tensor;
- INT4: weight-only — a DequantizeLinear of a constant signed INT4 initializer with `block_size`,
  feeding a MatMul/Gemm weight; no INT4 QuantizeLinear; UINT4 is not accepted;
- QuantizeLinear writes signed INT8 (its zero point's type, else `output_dtype`, else ONNX's default
  UINT8, which TensorRT rejects) or FP8 E4M3;
- scales are positive constants; fp16 scales are normal (≥ 2⁻¹⁴ ≈ 6.1e-5: a subnormal scale loses
  precision, and TensorRT may flush it to 0);
- INT4 blocks run along K, the reduction dimension of the weight's MatMul/Gemm (axis rank−2 of a
  MatMul weight `[.., K, N]`, of a Gemm weight unless transB, then axis 1): blocks along N give each
  output column several scales within one dot product, which TensorRT's INT4 kernels do not take;
- no `MatMulNBits` (ORT contrib op TensorRT cannot parse);
- precision "int4" and "int8": the non-quantized graph is fp16 (a strongly typed network runs the
  precision it reads: an fp32 graph would run every non-quantized layer in fp32/TF32).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

Precision = Literal["int8", "int4", "fp16", "fp32"]
FP16_MIN_NORMAL = 2.0**-14  # 6.103515625e-05
Q_OUTPUT_TYPES = (TensorProto.INT8, TensorProto.FLOAT8E4M3FN)


@dataclass(frozen=True)
class Violation:
    """One broken rule: the node (or tensor), the rule, and what was found."""

    node: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.node}: {self.rule} ({self.detail})"


def _attr(node: onnx.NodeProto, name: str, default: int | None = None) -> int | None:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def check_tensorrt_onnx(model_or_path: onnx.ModelProto | str | os.PathLike[str], precision: Precision) -> list[Violation]:
    """Every rule the graph breaks for a TensorRT build at `precision` (empty list = acceptable)."""
    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(str(model_or_path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in g.node:
        for i, x in enumerate(n.input):
            consumers.setdefault(x, []).append((n, i))
    out: list[Violation] = []

    def const_array(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        c = consts.get(name)
        if c is not None:
            for a in c.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def dtype_of(name: str) -> int | None:
        if name in inits:
            return inits[name].data_type
        c = consts.get(name)
        if c is not None:
            for a in c.attribute:
                if a.name == "value":
                    return a.t.data_type
        return None

    def k_axis(consumer: onnx.NodeProto, rank: int) -> int:
        """The reduction (K) axis of the weight input of a MatMul/Gemm."""
        if consumer.op_type == "Gemm" and _attr(consumer, "transB", 0):
            return 1
        return rank - 2

    for n in g.node:
        label = n.name or f"{n.op_type}({n.output[0]})"
        if n.op_type == "MatMulNBits" or n.domain not in ("", "ai.onnx"):
            out.append(Violation(label, "ORT-only op", f"{n.domain or 'ai.onnx'}::{n.op_type} cannot be parsed by TensorRT"))
            continue
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(n.input) > 2 and n.input[2]:
            zp = const_array(n.input[2])
            if zp is None or np.any(zp.astype(np.int64) != 0):
                out.append(Violation(label, "symmetric only", "zero point present and not all 0 (or not constant)"))
        scale = const_array(n.input[1])
        if scale is None:
            out.append(Violation(label, "constant scale", f"scale {n.input[1]} is not an initializer/Constant"))
        elif not np.all(scale.astype(np.float64) > 0):
            out.append(Violation(label, "positive scale", "scale has values ≤ 0"))
        elif scale.dtype == np.float16 and float(np.min(scale)) < FP16_MIN_NORMAL:
            out.append(Violation(label, "normal fp16 scale", f"smallest scale {float(np.min(scale)):.3g} is below "
                                 f"fp16's smallest normal {FP16_MIN_NORMAL:.3g} (subnormal)"))
        x_type = dtype_of(n.input[0]) if n.op_type == "DequantizeLinear" else None
        block = _attr(n, "block_size", 0) or 0
        is_weight = n.op_type == "DequantizeLinear" and n.input[0] in inits
        if x_type in (TensorProto.UINT4, TensorProto.UINT8):
            out.append(Violation(label, "signed only", f"{TensorProto.DataType.Name(x_type)} codes; TensorRT needs signed INT8/INT4"))
        if n.op_type == "QuantizeLinear":
            zp_type = dtype_of(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            # ONNX: the output has the zero point's type; without one, `output_dtype` (opset 21), else UINT8.
            q_type = zp_type if zp_type is not None else (_attr(n, "output_dtype", 0) or TensorProto.UINT8)
            if q_type not in Q_OUTPUT_TYPES:
                out.append(Violation(label, "signed INT8 QuantizeLinear output",
                                     f"writes {TensorProto.DataType.Name(q_type)}; TensorRT quantizes to INT8 (or FP8)"))
            if zp_type in (TensorProto.INT4, TensorProto.UINT4):
                out.append(Violation(label, "INT4 weight-only", "INT4 QuantizeLinear quantizes an activation"))
            if scale is not None and scale.size != 1:
                out.append(Violation(label, "per-tensor activations", f"activation scale has {scale.size} values"))
            continue
        if x_type == TensorProto.INT4 or x_type == TensorProto.UINT4:
            uses = consumers.get(n.output[0], [])
            if not uses or not all(c.op_type in ("MatMul", "Gemm") and i == 1 for c, i in uses):
                kinds = sorted({f"{c.op_type}[{i}]" for c, i in uses})
                out.append(Violation(label, "INT4 on MatMul/Gemm weights only", f"feeds {kinds}"))
            if not block:
                out.append(Violation(label, "INT4 block quantization", "DequantizeLinear has no block_size"))
            rank = len(inits[n.input[0]].dims)
            axis = _attr(n, "axis", 1) or 0
            axis = axis + rank if axis < 0 else axis
            if axis < rank - 2:
                out.append(Violation(label, "block on last two dims", f"axis {axis} of rank {rank}"))
            for c, i in uses:
                if c.op_type in ("MatMul", "Gemm") and i == 1 and axis != k_axis(c, rank):
                    out.append(Violation(label, "INT4 blocks along K",
                                         f"blocks along axis {axis}; K is axis {k_axis(c, rank)} of the "
                                         f"{c.op_type} weight (shape {list(inits[n.input[0]].dims)})"))
        elif not is_weight and scale is not None and scale.size != 1:
            out.append(Violation(label, "per-tensor activations", f"activation scale has {scale.size} values"))
        elif is_weight and block:
            out.append(Violation(label, "INT8 weights per channel", "block-wise INT8 DequantizeLinear"))

    if precision in ("int4", "int8"):
        rule = f"fp16 graph for {precision.upper()}"
        dq_outs = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
        scales = {n.input[1] for n in g.node if n.op_type in ("DequantizeLinear", "QuantizeLinear")}
        for name, t in inits.items():
            if t.data_type == TensorProto.FLOAT and name not in scales and name not in dq_outs:
                out.append(Violation(name, rule, f"fp32 initializer in a strongly typed {precision.upper()} network"))
        for n in g.node:
            if n.op_type == "DequantizeLinear" and dtype_of(n.input[1]) == TensorProto.FLOAT:
                out.append(Violation(n.name or n.output[0], rule, "fp32 scale: the tensor dequantizes to fp32"))
        if precision == "int4" and not any(t.data_type == TensorProto.INT4 for t in inits.values()):
            out.append(Violation("<graph>", "INT4 weights", "no INT4 initializer: not an INT4 weight-only model"))
    if precision == "int8" and not any(n.op_type == "QuantizeLinear" for n in g.node):
        out.append(Violation("<graph>", "explicit quantization", "no QuantizeLinear: not an INT8 Q/DQ model"))
    return out
