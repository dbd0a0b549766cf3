"""Rewrite an exported fp graph so its weights are the compress stage's own integer codes.

Each quantized MatMul/Gemm/Gather weight initializer `W` becomes

    codes (INT8/UINT8/INT4/UINT4 initializer) --DequantizeLinear(scale, axis, block_size)--> [Add(offset)] --> W

so ONNX Runtime evaluates `scale * codes + offset` in float32, exactly what
`QuantizedTensor.dequantize()` computes: the deployed model is the measured one, on the same grid.
The paper's asymmetric grid has offset q0 = min W, which is not an integer zero point, hence the
separate `Add` (folded away when the offset is 0). Pruned positions of an asymmetric grid have no
code that dequantizes to 0, so a bit-packed keep-mask (1 bit per weight) re-zeroes them; symmetric
grids hold 0 exactly and need no mask.

Parameters that are not quantized (or are 1-D: biases, LayerNorm) keep an fp initializer carrying
the variant's own values (fake-quant or pruned).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import ml_dtypes
import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from tlc_export.errors import StageError
from tlc_export.export.onnx_export import InitializerRef

# (op_type, input index) at which a weight may be dequantized: what runtimes block-quantize.
WEIGHT_SLOTS = {("MatMul", 1), ("Gemm", 1), ("Gather", 0)}


class CodesLike(Protocol):
    """What `tlc_export.compress.quantize.QuantizedTensor` provides (duck-typed for tests)."""

    codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    bits: int
    granularity: str
    group_size: int
    symmetric: bool
    shape: tuple[int, ...]

    def dequantize(self) -> torch.Tensor: ...


@dataclass
class RewriteReport:
    """What a rewrite did: initializers turned into codes, fp substitutions, bytes of codes."""

    quantized: list[str]
    substituted: list[str]
    masked: list[str]


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            out.setdefault(name, []).append((node.op_type, i))
    return out


def is_weight_slot(graph: onnx.GraphProto, name: str) -> bool:
    """True when every consumer of `name` uses it as a MatMul/Gemm weight or a Gather table."""
    uses = _consumers(graph).get(name, [])
    return bool(uses) and all(u in WEIGHT_SLOTS for u in uses)


def code_array(q: CodesLike, container: str) -> np.ndarray:
    """Codes as numpy in the ONNX container dtype: 'int8' (UINT8/INT8) or 'int4' (UINT4/INT4)."""
    codes = q.codes.detach().cpu().to(torch.int16).numpy()
    lo, hi = int(codes.min()), int(codes.max())
    if container == "int4":
        dt = ml_dtypes.int4 if q.symmetric else ml_dtypes.uint4
        rng = (-8, 7) if q.symmetric else (0, 15)
    else:
        dt = np.int8 if q.symmetric else np.uint8
        rng = (-128, 127) if q.symmetric else (0, 255)
    if lo < rng[0] or hi > rng[1]:
        raise StageError(
            f"codes in [{lo}, {hi}] do not fit the {container} container {rng} "
            f"(bits={q.bits}, symmetric={q.symmetric}); export this bit width with a wider format"
        )
    return codes.astype(dt)


def _onnx_grid(q: CodesLike, transposed: bool, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, dict[str, int], np.ndarray]:
    """(scale, offset-for-Add, DequantizeLinear attributes, Add-offset shaped to broadcast) in ONNX layout.

    Torch layout: per-channel over dim 0, blocks along the last dim. ONNX MatMul holds W.T, so
    there per-channel is axis 1 and blocks run along axis 0.
    """
    scale = q.scale.detach().cpu().float().numpy()
    offset = q.offset.detach().cpu().float().numpy()
    if q.granularity == "per-tensor" or len(q.shape) < 2:
        return scale.reshape(()).astype(dtype), offset.reshape(()).astype(dtype), {}, offset.reshape(())
    rows, cols = q.shape
    if q.granularity == "per-channel":
        s = scale.reshape(rows)
        o = offset.reshape(rows)
        if transposed:
            return s.astype(dtype), o, {"axis": 1}, o.reshape(1, rows)
        return s.astype(dtype), o, {"axis": 0}, o.reshape(rows, 1)
    if q.granularity == "block":
        nb = scale.shape[-1]
        if transposed:  # ONNX [K, N], blocks along axis 0; offset viewed as [nb, 1, N]
            return (scale.T.astype(dtype), offset.T, {"axis": 0, "block_size": q.group_size},
                    offset.T.reshape(nb, 1, rows))
        return (scale.astype(dtype), offset, {"axis": 1, "block_size": q.group_size},
                offset.reshape(rows, nb, 1))
    raise StageError(f"unknown granularity {q.granularity!r}; expected per-tensor, per-channel or block")


def _block_offset_nodes(out: str, dq_out: str, q: CodesLike, transposed: bool, off: np.ndarray,
                        fdtype: np.dtype, inits: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Add a block-wise offset without storing it per weight: expand [nb,1,N] → [nb,g,N] → [K,N]."""
    rows, cols = q.shape
    g = q.group_size
    nb = off.shape[0] if transposed else off.shape[1]
    K, N = (cols, rows) if transposed else (rows, cols)
    exp_shape = [nb, g, N] if transposed else [K, nb, g]
    flat_shape = [nb * g, N] if transposed else [K, nb * g]
    axis = 0 if transposed else 1
    length = cols
    n = out
    inits += [
        numpy_helper.from_array(off.astype(fdtype), f"{n}__offset"),
        numpy_helper.from_array(np.array(exp_shape, np.int64), f"{n}__offset_expand"),
        numpy_helper.from_array(np.array(flat_shape, np.int64), f"{n}__offset_flat"),
        numpy_helper.from_array(np.array([0], np.int64), f"{n}__offset_start"),
        numpy_helper.from_array(np.array([length], np.int64), f"{n}__offset_end"),
        numpy_helper.from_array(np.array([axis], np.int64), f"{n}__offset_axis"),
    ]
    return [
        helper.make_node("Expand", [f"{n}__offset", f"{n}__offset_expand"], [f"{n}__offset_e"]),
        helper.make_node("Reshape", [f"{n}__offset_e", f"{n}__offset_flat"], [f"{n}__offset_r"]),
        helper.make_node("Slice", [f"{n}__offset_r", f"{n}__offset_start", f"{n}__offset_end", f"{n}__offset_axis"],
                         [f"{n}__offset_full"]),
        helper.make_node("Add", [dq_out, f"{n}__offset_full"], [out]),
    ]


def _mask_nodes(out: str, pre: str, mask: np.ndarray, fdtype: np.dtype, inits: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Where(unpack(bits), w, 0): 1 bit per weight instead of a 1-byte bool per weight."""
    n = out
    flat = mask.reshape(-1).astype(bool)
    packed = np.packbits(flat, bitorder="little")
    inits += [
        numpy_helper.from_array(packed.reshape(-1, 1), f"{n}__mask_bits"),
        numpy_helper.from_array(np.arange(8, dtype=np.uint8).reshape(1, 8), f"{n}__mask_shift"),
        numpy_helper.from_array(np.array(1, np.uint8), f"{n}__mask_one"),
        numpy_helper.from_array(np.array([0], np.int64), f"{n}__mask_start"),
        numpy_helper.from_array(np.array([flat.size], np.int64), f"{n}__mask_end"),
        numpy_helper.from_array(np.array(mask.shape, np.int64), f"{n}__mask_shape"),
        numpy_helper.from_array(np.array([-1], np.int64), f"{n}__mask_flat"),
        numpy_helper.from_array(np.array(0, fdtype), f"{n}__mask_zero"),
    ]
    return [
        helper.make_node("BitShift", [f"{n}__mask_bits", f"{n}__mask_shift"], [f"{n}__mask_s"], direction="RIGHT"),
        helper.make_node("BitwiseAnd", [f"{n}__mask_s", f"{n}__mask_one"], [f"{n}__mask_a"]),
        helper.make_node("Reshape", [f"{n}__mask_a", f"{n}__mask_flat"], [f"{n}__mask_f"]),
        helper.make_node("Slice", [f"{n}__mask_f", f"{n}__mask_start", f"{n}__mask_end"], [f"{n}__mask_t"]),
        helper.make_node("Reshape", [f"{n}__mask_t", f"{n}__mask_shape"], [f"{n}__mask_u8"]),
        helper.make_node("Cast", [f"{n}__mask_u8"], [f"{n}__mask"], to=onnx.TensorProto.BOOL),
        helper.make_node("Where", [f"{n}__mask", pre, f"{n}__mask_zero"], [out]),
    ]


def dequant_nodes(
    name: str, q: CodesLike, transposed: bool, container: str, fdtype: np.dtype = np.float32,
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes + initializers that produce tensor `name` (ONNX layout) from `q`'s codes and grid."""
    codes = code_array(q, container)
    mask = getattr(q, "mask", None)
    mask_np = None if mask is None else mask.detach().cpu().numpy().astype(bool)
    if mask_np is not None and q.symmetric:
        codes = np.where(mask_np, codes, np.zeros((), codes.dtype)).astype(codes.dtype)  # 0 is on the grid
    if transposed:
        codes = np.ascontiguousarray(codes.T)
        if mask_np is not None:
            mask_np = np.ascontiguousarray(mask_np.T)
    scale, offset, attrs, off_b = _onnx_grid(q, transposed, fdtype)
    inits = [numpy_helper.from_array(codes, f"{name}__codes"), numpy_helper.from_array(scale, f"{name}__scale")]
    has_offset = bool(np.any(offset != 0))
    needs_mask = mask_np is not None and not q.symmetric and not mask_np.all()
    dq_out = f"{name}__dq" if (has_offset or needs_mask) else name
    nodes = [helper.make_node("DequantizeLinear", [f"{name}__codes", f"{name}__scale"], [dq_out], **attrs)]
    cur = dq_out
    if has_offset:
        add_out = f"{name}__add" if needs_mask else name
        if q.granularity == "block" and len(q.shape) == 2:
            nodes += _block_offset_nodes(add_out, cur, q, transposed, off_b, fdtype, inits)
        else:
            inits.append(numpy_helper.from_array(off_b.astype(fdtype), f"{name}__offset"))
            nodes.append(helper.make_node("Add", [cur, f"{name}__offset"], [add_out]))
        cur = add_out
    if needs_mask:
        nodes += _mask_nodes(name, cur, mask_np, fdtype, inits)
    return nodes, inits


def _value(t: torch.Tensor, transposed: bool, dtype: np.dtype) -> np.ndarray:
    a = t.detach().cpu().float().numpy()
    return np.ascontiguousarray(a.T if transposed else a).astype(dtype)


def rewrite_weights(
    model: onnx.ModelProto,
    refs: Mapping[str, InitializerRef],
    quantized: Mapping[str, CodesLike],
    dense: Mapping[str, torch.Tensor] | None = None,
    container: str = "int8",
    only: Any = None,
    slots: frozenset[tuple[str, int]] | set[tuple[str, int]] = WEIGHT_SLOTS,
) -> RewriteReport:
    """In place: quantized 2-D weights in a MatMul/Gemm/Gather slot become codes + DequantizeLinear;
    every other mapped initializer gets the variant's value (`dense[param]` or the dequantized codes).

    `only(param_name, onnx_name) -> bool` can restrict which weights get codes (e.g. TensorRT INT4:
    MatMul/Gemm only). Float initializers keep their current dtype (fp32 or fp16 graphs). `slots`: the
    (op_type, input index) uses a weight may have to get codes (a translation decoder's tied table also
    feeds the Transpose of its output layer).
    """
    graph = model.graph
    dense = dense or {}
    consumers = _consumers(graph)
    report = RewriteReport([], [], [])
    new_inits: list[onnx.TensorProto] = []
    new_nodes: list[onnx.NodeProto] = []
    keep: list[onnx.TensorProto] = []
    for init in graph.initializer:
        ref = refs.get(init.name)
        if ref is None:
            keep.append(init)
            continue
        fdtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        q = quantized.get(ref.param)
        uses = consumers.get(init.name, [])
        slot_ok = bool(uses) and all(u in slots for u in uses)
        if q is not None and len(q.shape) == 2 and slot_ok and (only is None or only(ref.param, init.name)):
            nodes, inits = dequant_nodes(init.name, q, ref.transposed, container, fdtype)
            new_nodes += nodes
            new_inits += inits
            report.quantized.append(ref.param)
            if getattr(q, "mask", None) is not None and not q.symmetric:
                report.masked.append(ref.param)
            continue
        if q is not None:
            value = q.dequantize()
        elif ref.param in dense:
            value = dense[ref.param]
        else:
            keep.append(init)
            continue
        arr = _value(value, ref.transposed, fdtype)
        if arr.shape != tuple(init.dims):
            raise StageError(f"initializer {init.name} ({tuple(init.dims)}) ← {ref.param} {arr.shape}: shape mismatch")
        keep.append(numpy_helper.from_array(arr, init.name))
        report.substituted.append(ref.param)
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    # Dequantize nodes must precede their consumers: put them first (they only read initializers).
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)
    return report


def weight_grid(q: CodesLike) -> dict[str, Any]:
    """Small description of a grid, for result rows."""
    return {"bits": q.bits, "granularity": q.granularity, "group_size": q.group_size, "symmetric": q.symmetric}
