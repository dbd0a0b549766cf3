"""Graph optimization for ONNX Runtime on CPU: the transformer fusions, applied to an fp32 file.

Two passes, in this order:
1. `fuse_preln_attention_` (ours): the exporter writes each self-attention as three projections,
   reshapes/transposes, `MatMul(Q·c, Kᵀ·c)` + additive key-padding mask, `Softmax` (+ the NaN guard
   of scaled_dot_product_attention), `MatMul(·, V)`. ONNX Runtime's transformer optimizer does not
   match this pre-LN/dynamo form, so we replace it with one `com.microsoft.Attention` (packed QKV
   weights `[H, 3H]`, the raw `attention_mask` as int32 `mask_index`, `scale` = c·c). That op runs
   the three projections as one GEMM and the heads in one kernel, and `quantize_dynamic` turns it
   into `QAttention`.
2. `onnxruntime.transformers.optimizer.optimize_model(model_type="bert", opt_level=0)`: its Python
   fusions (BiasGelu, LayerNormalization, ...) and nothing else, so the file stays portable across
   ONNX Runtime versions and execution providers (`opt_level` > 0 would bake in provider-specific
   rewrites). Its SkipLayerNormalization fusions are off (`FusionOptions`): residual sums stay
   `Add` (+ the bias `Add`) + `LayerNormalization`. CPU sessions that load the file should leave out
   ORT's own load-time re-fusion too (`tlc_export.export.session.CPU_DISABLED_OPTIMIZERS`).

The result must be validated against its reference by the caller (the export stage compares logits
with PyTorch); `optimize_for_cpu` only builds the file and records which fusions happened.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tlc_export.atomic import atomic_path

MS_DOMAIN = "com.microsoft"
# Operators the optimizer can introduce; their count after minus before is what got fused (the skip-LayerNorm
# ones are turned off below: listed so a file that still gets them says so).
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu", "Gelu", "FastGelu",
             "LayerNormalization", "EmbedLayerNormalization", "SkipSimplifiedLayerNormalization", "BiasAdd")
# No SkipLayerNormalization: ORT's CPU kernel for it took 3-4x the time of the Add + Add(bias) + LayerNormalization
# it replaces (onnxruntime 1.32, 2-core EPYC; the 4-layer H192 model ran 15 % faster fp32, 20 % int8-dynamic without).
_NO_SKIP_LAYER_NORM = ("enable_skip_layer_norm", "enable_bias_skip_layer_norm")
MASK_INT32 = "attention_mask_int32"


@dataclass
class GraphOptimization:
    """What happened to one file: `applied` (the optimized graph is the one written), the fused
    operator counts, node counts, and the reason when the unfused graph was kept."""

    applied: bool
    fusions: dict[str, int] = field(default_factory=dict)
    attention_fused: int = 0
    nodes_before: int = 0
    nodes_after: int = 0
    optimizer: str = ("onnxruntime.transformers.optimizer (bert, opt_level 0, no SkipLayerNormalization)"
                      " + tlc pre-LN attention fusion")
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Graph:
    """Producer/consumer/constant lookups over one graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        g = model.graph
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in g.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.inits = {i.name: i for i in g.initializer}

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def only_consumer(self, name: str, op: str) -> onnx.NodeProto | None:
        cs = self.consumers.get(name, [])
        return cs[0] if len(cs) == 1 and cs[0].op_type == op else None


@dataclass
class _Projection:
    x: str  # the normalized hidden states the projection reads
    weight: np.ndarray | str  # [H_in, H_out] (MatMul's B): a constant, or the tensor a DequantizeLinear computes
    bias: np.ndarray
    shape: tuple[int, int]
    scale: float  # product of the scalar multipliers met on the way to the QKᵀ MatMul
    source: str = ""  # the MatMul's weight input name (an initializer when `weight` is a constant)


def _projection(g: _Graph, name: str, shapes: dict[str, tuple[int, ...]]) -> _Projection | None:
    """Walk back from a Q/K/V operand through Mul(scalar), Transpose and Reshape to Add(MatMul(x, W), b).

    W is a constant, or any tensor of static 2-D shape (the INT8/INT4 code formats compute it with
    DequantizeLinear from their stored codes); b must be a constant."""
    scale = 1.0
    for _ in range(12):
        n = g.producer.get(name)
        if n is None:
            return None
        if n.op_type in ("Transpose", "Reshape"):
            name = n.input[0]
        elif n.op_type == "Mul":
            c = [g.const(i) for i in n.input]
            k = 0 if c[0] is not None and c[0].size == 1 else 1 if c[1] is not None and c[1].size == 1 else None
            if k is None:
                return None
            scale *= float(np.asarray(c[k]).reshape(()))
            name = n.input[1 - k]
        elif n.op_type == "Add":
            consts = [g.const(i) for i in n.input]
            k = 0 if consts[0] is not None else 1 if consts[1] is not None else None
            mm = g.producer.get(n.input[1 - k]) if k is not None else None
            if mm is None or mm.op_type != "MatMul":
                return None
            w = g.const(mm.input[1])
            shape = tuple(w.shape) if w is not None else shapes.get(mm.input[1], ())
            b = consts[k]
            if len(shape) != 2 or b is None or b.ndim != 1 or b.shape[0] != shape[1]:
                return None
            weight = w.astype(np.float32) if w is not None else mm.input[1]
            return _Projection(mm.input[0], weight, b.astype(np.float32), (int(shape[0]), int(shape[1])), scale, mm.input[1])
        else:
            return None
    return None


def fuse_preln_attention_(model: onnx.ModelProto, num_heads: int, mask_input: str = "attention_mask",
                          packed: dict[str, list[str]] | None = None) -> int:
    """Replace every exported self-attention block by one `com.microsoft.Attention`; returns how many.

    In place. A block is fused only when Q, K and V are projections of the same tensor with constant
    [H, H] weights and biases, and the attention output leaves through Transpose + Reshape to [B, S, H].
    The additive mask is assumed to be the key-padding mask of `mask_input` (what the exporter writes
    for an encoder); the caller's numerical validation with padded batches checks that assumption.

    `packed` (a dict, filled in): the projections stay a plain `MatMul` on the packed [H, 3H] weight,
    then `Split` and `com.microsoft.MultiHeadAttention` (the QKV bias as its `bias`). The packed
    initializer's name maps to its three source initializers (Q, K, V, side by side along the output
    columns), so a later pass can put integer codes there (`tlc_export.export.integer`): `Attention`
    would take the weight itself, and its quantized form (`QAttention`) has integer zero points only.
    """
    graph = model.graph
    if mask_input not in {i.name for i in graph.input}:
        return 0
    g = _Graph(model)
    shapes = _static_shapes(model)
    fused = 0
    new_nodes: list[onnx.NodeProto] = []
    for sm in [n for n in graph.node if n.op_type == "Softmax"]:
        add = g.producer.get(sm.input[0])
        if add is None or add.op_type != "Add":
            continue
        qk = next((g.producer[i] for i in add.input if i in g.producer and g.producer[i].op_type == "MatMul"), None)
        if qk is None:
            continue
        # Forward: optional IsNaN/Where guard, then MatMul(P, V) -> Transpose -> Reshape.
        probs = sm.output[0]
        guard = [c for c in g.consumers.get(probs, []) if c.op_type == "Where"]
        if guard:
            probs = guard[0].output[0]
        pv = next((c for c in g.consumers.get(probs, []) if c.op_type == "MatMul" and c.input[0] == probs), None)
        if pv is None:
            continue
        tr = g.only_consumer(pv.output[0], "Transpose")
        rs = g.only_consumer(tr.output[0], "Reshape") if tr is not None else None
        if rs is None:
            continue
        q, k, v = (_projection(g, n, shapes) for n in (qk.input[0], qk.input[1], pv.input[1]))
        if q is None or k is None or v is None or not (q.x == k.x == v.x) or v.scale != 1.0:
            continue
        hidden = q.shape[0]
        if any(p.shape != (hidden, hidden) for p in (q, k, v)) or hidden % num_heads:
            continue
        prefix = f"tlc_attention_{fused}"
        b = np.concatenate([q.bias, k.bias, v.bias])
        graph.initializer.append(numpy_helper.from_array(b, f"{prefix}.qkv_bias"))
        consts = all(isinstance(p.weight, np.ndarray) for p in (q, k, v))
        if packed is not None and consts:
            w = np.concatenate([q.weight, k.weight, v.weight], axis=1)  # type: ignore[list-item]
            graph.initializer.append(numpy_helper.from_array(w, f"{prefix}.qkv_weight"))
            graph.initializer.append(numpy_helper.from_array(np.array([hidden] * 3, np.int64), f"{prefix}.qkv_split"))
            packed[f"{prefix}.qkv_weight"] = [q.source, k.source, v.source]
            parts = [f"{prefix}.{p}" for p in "qkv"]
            new_nodes += [
                helper.make_node("MatMul", [q.x, f"{prefix}.qkv_weight"], [f"{prefix}.qkv"], name=f"{prefix}_qkv"),
                helper.make_node("Split", [f"{prefix}.qkv", f"{prefix}.qkv_split"], parts, name=f"{prefix}_split", axis=-1),
                helper.make_node("MultiHeadAttention", [*parts, f"{prefix}.qkv_bias", MASK_INT32], [rs.output[0]],
                                 name=prefix, domain=MS_DOMAIN, num_heads=num_heads, scale=q.scale * k.scale),
            ]
            rs.output[0] = f"{rs.output[0]}.unfused"
            fused += 1
            continue
        if all(isinstance(p.weight, np.ndarray) for p in (q, k, v)):
            w = np.concatenate([q.weight, k.weight, v.weight], axis=1)  # type: ignore[list-item]
            graph.initializer.append(numpy_helper.from_array(w, f"{prefix}.qkv_weight"))
        else:
            # Stored codes stay as they are (storage unchanged); the packed matrix is built at run time.
            names = []
            for p, part in zip((q, k, v), "qkv", strict=True):
                if isinstance(p.weight, np.ndarray):
                    graph.initializer.append(numpy_helper.from_array(p.weight, f"{prefix}.{part}_weight"))
                    names.append(f"{prefix}.{part}_weight")
                else:
                    names.append(p.weight)
            new_nodes.append(helper.make_node("Concat", names, [f"{prefix}.qkv_weight"], name=f"{prefix}_qkv", axis=1))
        node = helper.make_node(
            "Attention", [q.x, f"{prefix}.qkv_weight", f"{prefix}.qkv_bias", MASK_INT32], [rs.output[0]],
            name=prefix, domain=MS_DOMAIN, num_heads=num_heads, scale=q.scale * k.scale,
        )
        new_nodes.append(node)
        rs.output[0] = f"{rs.output[0]}.unfused"  # the old block becomes dead and is pruned below
        fused += 1
    if not fused:
        return 0
    cast = helper.make_node("Cast", [mask_input], [MASK_INT32], name="tlc_attention_mask_int32", to=onnx.TensorProto.INT32)
    graph.node.extend([cast, *new_nodes])
    _toposort_prune_(model)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return fused


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Fully static tensor shapes from ONNX shape inference (empty when inference fails)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shapes only widen what can be fused
        return {}
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(int(d.dim_value) for d in dims)
    return out


def _toposort_prune_(model: onnx.ModelProto) -> None:
    """Keep only nodes the graph outputs need, in topological order; drop unused initializers."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    needed: set[int] = set()
    stack = [o.name for o in graph.output]
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        n = producer.get(t)
        if n is not None and id(n) not in needed:
            needed.add(id(n))
            stack.extend(i for i in n.input if i)
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered: list[onnx.NodeProto] = []
    pending = [n for n in graph.node if id(n) in needed]
    while pending:
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError("graph has a cycle or a missing input after attention fusion")
        pending = rest
    used = {i for n in ordered for i in n.input}
    keep_inits = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(ordered)
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)


def _counts(model: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in model.graph.node)


def optimize_for_cpu(
    src: str | os.PathLike[str] | onnx.ModelProto,
    dst: str | os.PathLike[str],
    num_heads: int,
    hidden_size: int,
    fuse_attention: bool = True,
) -> GraphOptimization:
    """Write the fused graph of `src` to `dst` (atomically) and return what was fused.

    Raises whatever the optimizer raises; the caller decides whether to fall back.
    """
    model = onnx.load(str(src)) if not isinstance(src, onnx.ModelProto) else src
    opt, info = optimize_proto(model, num_heads, hidden_size, fuse_attention)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst, suffix=".onnx") as tmp:
        onnx.save_model(opt, str(tmp))
    return info


def optimize_proto(
    model: onnx.ModelProto, num_heads: int, hidden_size: int, fuse_attention: bool = True,
    packed: dict[str, list[str]] | None = None,
) -> tuple[onnx.ModelProto, GraphOptimization]:
    """The fused graph of `model` (changed in place by the attention fusion) and what was fused;
    `packed`: see `fuse_preln_attention_` (projections kept as one MatMul on the packed weight)."""
    import logging

    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    for flag in _NO_SKIP_LAYER_NORM:
        setattr(options, flag, False)
    before = _counts(model)
    attention = fuse_preln_attention_(model, num_heads, packed=packed) if fuse_attention else 0
    # The optimizer logs every pattern it tried; keep the export console readable.
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        opt = optimize_model(model, model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0,
                             optimization_options=options)
    finally:
        quiet.setLevel(level)
    if any(n.domain == MS_DOMAIN for n in opt.model.graph.node) and not any(o.domain == MS_DOMAIN for o in opt.model.opset_import):
        opt.model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    after = _counts(opt.model)
    fusions = {op: after[op] - before.get(op, 0) for op in FUSED_OPS if after[op] - before.get(op, 0) > 0}
    return opt.model, GraphOptimization(True, fusions, attention, sum(before.values()), sum(after.values()))
