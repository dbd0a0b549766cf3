"""The compress stage's own codes on ONNX Runtime's integer kernels (CPU), not dequantized per call.

A DequantizeLinear (+ Add(q0)) file rebuilds every fp32 weight on every call and then runs fp32
GEMMs: small, not fast. Here each weight matrix keeps the variant's codes but feeds an integer (or
fused low-bit) kernel directly:

- 8-bit containers (the b8 / b6 variants) → ORT's u8s8 integer kernels on the stored codes. The paper's
  grid is W = D·W_I + q0 (q0 = min W, not an integer multiple of D). With z = round(-q0/D), the code
  nearest 0, and c = q0 + z·D (|c| ≤ D/2):

      X·W = D·(X·(W_I − z)) + c·rowsum(X)

  The first term is the integer GEMM (codes as int8 `W_I − 128`, zero point `z − 128`); ORT's kernels
  take integer zero points only, so the second, rank-1 term rides in the GEMM as an extra input
  feature f = c·rowsum(X)/(D·m) (one fp32 GEMV, then a Concat onto X) against one extra weight row of
  code z + m (value D·m): the GEMM adds c·rowsum(X) itself. f is quantized with X, so the term is exact
  up to D·m·s_x/2 per output, beside the ≈ √K·s_x·rms(W) that quantizing X costs anyway. Zero features
  pad the widened K to a multiple of 4 (ORT packs K in fours). Symmetric grids have c = 0 and map
  directly; per-channel grids (per-column c) add rowsum(X) ⊗ c after the GEMM instead. Where only
  LayerNorms read the output (the attention output and second FFN projections, added into the residual
  stream), the term is a per-row constant the mean subtraction removes, and is left out.
- Packed attention (`optimize.fuse_preln_attention_(packed=...)`: one MatMul on the packed [H, 3H]
  weight, a Split, MultiHeadAttention) → one `QAttention`, the integer GEMM and the attention in one
  kernel as in `onnx-int8-dynamic`: per-column scales and zero points keep each projection's grid, and
  one feature per projection (its extra row holds z_p + m in its own columns, the zero point elsewhere)
  carries its c_p. Grids QAttention cannot hold keep one MatMulIntegerToFloat per projection on X
  quantized once.
- 4-bit → `com.microsoft.MatMulNBits`, whose block scales and *float* zero points hold any grid:
  per-tensor / per-channel codes get the same D in every block and zero point −q0/D, so
  (W_I − zp)·D = D·W_I + q0 exactly; block grids map block for block. No correction term. Or
  (`int8-at-load`) the 4-bit codes widened to int8 by constant nodes ONNX Runtime folds at load, then
  the 8-bit kernels above.
- Embedding tables → gather the codes, dequantize only the rows looked up; a table is never dequantized
  whole. 8-bit tables with one scale: Gather + DequantizeLinear (scalar scale, the grid's integer zero
  point), as ONNX Runtime's own INT8 files; per-row, block and 4-bit grids: `com.microsoft.GatherBlockQuantized`.
  What an integer zero point leaves of the offset (the paper's grid) is a per-row constant the embedding
  LayerNorm removes, so its Add is left out where only that LayerNorm reads the sum.
- A Gemm (one row per example: the classifier head) in an 8-bit or `int8-at-load` file keeps its codes and rebuilds D·W_I + q0 in fp32
  by constant nodes folded at load: an integer kernel gains nothing there, and its dynamic
  quantization, rank-1 term and bias cost four nodes per call.

What none of these kernels can hold falls back to codes + DequantizeLinear (`qdq.dequant_nodes`,
8-bit container) and is listed in the report: asymmetric weights with a pruning mask (a re-zeroed
position has no code), 8-bit block grids, 4-bit blocks that are not a power of two ≥ 16.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from tlc_export.errors import StageError
from tlc_export.export.onnx_export import InitializerRef
from tlc_export.export.qdq import CodesLike, dequant_nodes

MS = "com.microsoft"
ACCURACY_LEVELS = (0, 4)  # MatMulNBits: 0 = fp32 compute on dequantized blocks, 4 = int8 compute where supported
# How a 4-bit file runs its weight matrices: MatMulNBits at accuracy level 0 or 4, or the 4-bit codes
# widened to int8 at load (constant-folded) for DynamicQuantizeMatMul.
INT4_KERNELS = ("matmulnbits-acc0", "matmulnbits-acc4", "int8-at-load")
# QAttention's extra weight rows: code z + m carries a projection's rank-1 term (see `_Builder.qattention`)
_FEATURE_CODE = 16
# A residual offset c = q0 + z·Δ within this many steps of 0 is float32 rounding of a grid whose zero point is
# an integer (compress.quantize.zero_point: integer): it is dropped, which moves each weight by < 1e-4·Δ.
_ON_GRID = 1e-4


def _zero_point(offset: np.ndarray, scale: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(z, c): the code z = round(−q0/Δ) nearest 0, and c = q0 + z·Δ (float32), what that integer zero point
    leaves of the offset; c is 0 where the grid is integer (within `_ON_GRID` steps)."""
    z = np.clip(np.round(-offset / scale), 0, 2**bits - 1)
    c = offset + z * scale
    return z, np.where(np.abs(c) <= _ON_GRID * np.abs(scale), 0.0, c).astype(np.float32)


def _table_codes(w: str, codes: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """A table's codes as the unsigned `bits`-bit container stores them (symmetric codes shifted by 2^(bits−1),
    the container's zero point); raises when they do not fit."""
    stored = codes + 2 ** (bits - 1) if symmetric else codes  # 0 .. 2^bits − 1
    if stored.min() < 0 or stored.max() > 2**bits - 1:
        raise StageError(f"{w}: codes outside the {bits}-bit container")
    return stored.astype(np.uint8)


def _feature_code(zp: int) -> int:
    """m, the extra weight row's code offset from the zero point (value Δ·m): ±16, whichever stays in int8."""
    return _FEATURE_CODE if zp + _FEATURE_CODE <= 127 else -_FEATURE_CODE


@dataclass
class IntegerReport:
    """What `to_integer_kernels_` did, per kernel, and which weights fell back to DequantizeLinear (why)."""

    dynamic_matmul: list[str] = field(default_factory=list)
    # weights whose GEMM shares one quantized X with others (Q, K, V): MatMulIntegerToFloat after one
    # DynamicQuantizeLinear
    integer_matmul: list[str] = field(default_factory=list)
    # Q/K/V weights whose packed codes run in QAttention (integer GEMM + attention in one kernel)
    qattention: list[str] = field(default_factory=list)
    # Gemm weights (the classifier head) kept as codes and rebuilt in fp32 when the file loads
    at_load: list[str] = field(default_factory=list)
    matmul_nbits: list[str] = field(default_factory=list)
    gather_quantized: list[str] = field(default_factory=list)  # tables on GatherBlockQuantized
    gather_dequantized: list[str] = field(default_factory=list)  # 8-bit tables with one scale: Gather + DequantizeLinear
    corrections: int = 0
    corrections_dropped: list[str] = field(default_factory=list)  # outputs only LayerNorms read (see row_shift_invisible)
    int4_kernel: str | None = None
    packed: dict[str, list[str]] = field(default_factory=dict)  # packed QKV weight → its source initializers (Q, K, V)
    fallback: dict[str, str] = field(default_factory=dict)
    accuracy_level: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Part:
    name: str  # the source initializer
    ref: InitializerRef
    q: CodesLike


def _columns(q: CodesLike, transposed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes [K, N] int64, scale [N] or [nb, N], offset like scale) in ONNX MatMul layout (X·B)."""
    codes = q.codes.detach().cpu().to(dtype=torch.int16).numpy().astype(np.int64)
    scale = q.scale.detach().cpu().double().numpy()
    offset = q.offset.detach().cpu().double().numpy()
    rows, cols = q.shape  # torch layout
    if transposed:  # torch [N, K] → ONNX [K, N]
        codes = codes.T
        n = rows
        if q.granularity == "per-tensor":
            return codes, np.full(n, scale.reshape(())), np.full(n, offset.reshape(()))
        if q.granularity == "per-channel":
            return codes, scale.reshape(n), offset.reshape(n)
        return codes, scale.reshape(rows, -1).T, offset.reshape(rows, -1).T  # block: [nb, N]
    if q.granularity != "per-tensor":
        raise _Unsupported(f"{q.granularity} grid on an untransposed MatMul weight (its channels are not columns)")
    return codes, np.full(cols, scale.reshape(())), np.full(cols, offset.reshape(()))


class _Unsupported(Exception):
    """This weight cannot go to the integer kernel; the message says why (it falls back)."""


def _check_parts(parts: Sequence[_Part]) -> None:
    for p in parts:
        if len(p.q.shape) != 2:
            raise _Unsupported("not a matrix")
        if getattr(p.q, "mask", None) is not None and not p.q.symmetric and not bool(p.q.mask.all()):
            # A pruned position holds the zero code z (QuantizedTensor.set_mask_): its value Δ·z + q0 is 0
            # only on a grid whose zero point is an integer.
            _, scale, offset = _columns(p.q, p.ref.transposed)
            if np.any(_zero_point(offset, scale, p.q.bits)[1]):
                raise _Unsupported("asymmetric codes with a pruning mask on the paper's grid (a re-zeroed weight has "
                                   "no code; compress.quantize.zero_point: integer gives it one)")
    kinds = {(p.q.symmetric, p.q.granularity == "block", p.q.bits > 4) for p in parts}
    if len(kinds) != 1:
        raise _Unsupported("packed parts on different grids")


def _padded(k: int, p: int) -> int:
    """p features, padded with zero ones so that the widened K is a multiple of 4: ORT's u8s8 GEMMs pack K
    in fours, and the odd-width remainder measured slower (≈ 3 % at batch 32 on the quickstart's size)."""
    return p + (-(k + p)) % 4


def _pow2_block(k: int, cap: int = 256) -> int:
    """The largest power of two in [16, cap] dividing k (MatMulNBits / GatherBlockQuantized blocks), else 32."""
    for b in (256, 128, 64, 32, 16):
        if b <= cap and k % b == 0:
            return b
    return 32


class _Builder:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        g = model.graph
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.graph_outputs = {o.name for o in g.output}
        self.split_sizes = {i.name: numpy_helper.to_array(i).tolist() for i in g.initializer
                            if i.data_type == onnx.TensorProto.INT64 and len(i.dims) == 1}
        self.inits: list[onnx.TensorProto] = []
        self.rowsum: dict[str, str] = {}
        self.shared_quant: dict[str, tuple[str, str, str]] = {}
        self.pending_quant: dict[str, list[onnx.NodeProto]] = {}
        self.rank1: dict[tuple[str, float], str] = {}  # (X, c) → c·rowsum(X)
        self.pending: dict[str, list[onnx.NodeProto]] = {}  # rank-1 nodes not yet placed in the graph
        self.report = IntegerReport()
        self.float_inits = {i.name: i for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT}
        self.absorbed: set[str] = set()  # names of bias Adds taken into a DynamicQuantizeMatMul

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    # -- 8-bit: DynamicQuantizeMatMul + rank-1 correction ---------------------------------------------
    def dynamic_matmul(self, node: onnx.NodeProto, w: str, parts: Sequence[_Part], nibbles: bool = False) -> list[onnx.NodeProto]:
        """DynamicQuantizeMatMul on the codes (+ the rank-1 correction). `nibbles`: 4-bit codes stored two
        per byte and widened to int8 by constant nodes, which ONNX Runtime folds when it loads the file
        (storage of INT4, the kernel of INT8)."""
        if any(p.q.granularity == "block" for p in parts):
            raise _Unsupported("block grid (DynamicQuantizeMatMul scales are per column)")
        cols = [_columns(p.q, p.ref.transposed) for p in parts]
        codes = np.concatenate([c[0] for c in cols], axis=1)
        scale = np.concatenate([c[1] for c in cols])
        offset = np.concatenate([c[2] for c in cols])
        x, y = node.input[0], node.output[0]
        symmetric = parts[0].q.symmetric
        shift = 8 if nibbles else 128  # stored codes − shift fit the signed container of ORT's u8s8 kernels
        lo, hi = (-(shift - 1), shift - 1) if symmetric else (0, 2 * shift - 1)
        if codes.min() < lo or codes.max() > hi:
            raise StageError(f"{w}: codes in [{codes.min()}, {codes.max()}] outside {lo}..{hi}")
        if symmetric:
            b, zp, c = codes, None, None
        else:
            z, c = _zero_point(offset, scale, parts[0].q.bits)
            b = codes - shift
            zp = (z - shift).astype(np.int8)
        uniform = bool(np.all(scale == scale[0])) and (zp is None or bool(np.all(zp == zp[0])))
        s = np.float32(scale[0]) if uniform else scale.astype(np.float32)
        nodes: list[onnx.NodeProto] = []
        if nibbles:
            nodes += self._widen(f"{w}__codes", b + 8)
        else:
            self.const(f"{w}__codes", b.astype(np.int8))
        ins = [x, f"{w}__codes", self.const(f"{w}__scale", np.asarray(s, np.float32))]
        if zp is not None:
            ins.append(self.const(f"{w}__zero_point", np.asarray(zp[0] if uniform else zp, np.int8)))
        uniform_c = c is not None and bool(np.all(c == c[0]))
        if c is None or not np.any(c) or (uniform_c and self.row_shift_invisible(y)):
            # A per-row constant added to a tensor that only LayerNorms read changes nothing downstream.
            if c is not None and np.any(c):
                self.report.corrections_dropped.append(w)
            return [*nodes, *self.gemm(ins, y, w, n=codes.shape[1])]
        if uniform_c and uniform and x not in self.shared_quant:
            # One extra input feature f = c·rowsum(X)/(D·m) and one weight row of code z + m: the integer GEMM
            # adds c·rowsum(X) itself (as in `qattention`). A Concat on the [.., K] input costs less than an
            # Add on the [.., N] output (FFN up-projections: N = 4K).
            z0 = int(zp.reshape(-1)[0])
            m = _feature_code(z0)
            row = np.full((_padded(codes.shape[0], 1), codes.shape[1]), z0, np.int8)  # padding rows: value 0
            row[0] = z0 + m
            if nibbles:
                nodes.append(helper.make_node("Concat", [ins[1], self.const(f"{w}__feature_row", row)],
                                              [f"{w}__codes_widened"], name=f"{w}__codes_widened", axis=0))
                ins[1] = f"{w}__codes_widened"
            else:
                at = next(i for i, t in enumerate(self.inits) if t.name == f"{w}__codes")
                self.inits[at] = numpy_helper.from_array(np.concatenate([b, row], axis=0).astype(np.int8), f"{w}__codes")
            ratios = [float(c[0]) / (float(s) * m)] + [0.0] * (len(row) - 1)
            more, ins[0] = self.features(x, codes.shape[0], ratios, w)
            self.report.corrections += 1
            return [*nodes, *more, *self.gemm(ins, y, w, n=codes.shape[1])]
        nodes += self.gemm(ins, f"{w}__xw", w)
        r = self.rowsum.get(x)
        if r is None and not uniform_c:
            r = self.rowsum[x] = f"{x}__rowsum"
            axes = self.const(f"{x}__rowsum_axes", np.array([-1], np.int64))
            nodes.append(helper.make_node("ReduceSum", [x, axes], [r], name=f"{x}__rowsum", keepdims=1))
        widths = [p.q.shape[0] if p.ref.transposed else p.q.shape[1] for p in parts]
        per_part = np.split(c, np.cumsum(widths)[:-1])
        if not uniform_c and len(parts) > 1 and len(set(widths)) == 1 and all(np.all(pc == pc[0]) for pc in per_part):
            # Packed Q/K/V, one c per part: add [B, S, P, 1] to the output viewed as [B, S, P, H] (one pass),
            # not a materialized [B, S, 3H] correction.
            cp = self.const(f"{w}__correction", np.array([pc[0] for pc in per_part], np.float32))
            view = self.const(f"{w}__parts_view", np.array([0, 0, len(parts), widths[0]], np.int64))
            flat = self.const(f"{w}__parts_flat", np.array([0, 0, len(parts) * widths[0]], np.int64))
            last = self.const(f"{w}__last", np.array([-1], np.int64))
            nodes += [helper.make_node("Mul", [r, cp], [f"{w}__rank1"], name=f"{w}__rank1"),
                      helper.make_node("Unsqueeze", [f"{w}__rank1", last], [f"{w}__rank1_4d"], name=f"{w}__rank1_4d"),
                      helper.make_node("Reshape", [f"{w}__xw", view], [f"{w}__xw_4d"], name=f"{w}__xw_4d"),
                      helper.make_node("Add", [f"{w}__xw_4d", f"{w}__rank1_4d"], [f"{w}__sum_4d"], name=f"{w}__corrected"),
                      helper.make_node("Reshape", [f"{w}__sum_4d", flat], [y], name=f"{w}__sum")]
            self.report.corrections += 1
            return nodes
        if uniform_c:
            rank1, more = self.rank1_terms(x, codes.shape[0], [float(c[0])], w)[0], self.pending.pop(x, [])
            nodes += more
        else:  # per-column c: rowsum(X) ⊗ c
            rank1 = f"{w}__rank1"
            nodes.append(helper.make_node("Mul", [r, self.const(f"{w}__correction", c)], [rank1], name=rank1))
        nodes.append(helper.make_node("Add", [f"{w}__xw", rank1], [y], name=f"{w}__corrected"))
        self.report.corrections += 1
        return nodes

    def features(self, x: str, k: int, ratios: Sequence[float], w: str) -> tuple[list[onnx.NodeProto], str]:
        """Nodes computing [X, X·[r₁·1 … r_P·1]] (X widened by P features rᵢ·rowsum(X)) and its name: one
        fp32 GEMV and a Concat. The [K, P] matrix is stored as its one row and expanded by a constant node,
        which ONNX Runtime folds at load: the file keeps no fp32 matrix besides the codes."""
        mm = f"{w}__features"
        row = self.const(f"{mm}_row", np.asarray([ratios], np.float32))
        shape = self.const(f"{mm}_shape", np.array([k, len(ratios)], np.int64))
        widened = f"{w}__x_features"
        return [helper.make_node("Expand", [row, shape], [f"{mm}_weight"], name=f"{mm}_weight"),
                helper.make_node("MatMul", [x, f"{mm}_weight"], [mm], name=mm),
                helper.make_node("Concat", [x, mm], [widened], name=widened, axis=-1)], widened

    def rank1_terms(self, x: str, k: int, cs: Sequence[float], w: str) -> list[str]:
        """Tensors [.., S, 1] holding c·rowsum(X) for each c, from one fp32 GEMV X·[c₁·1 … c_P·1]
        (P > 1: then a Split): one node in place of ReduceSum and a Mul per c. Made once per (X, c);
        the nodes wait in `pending[x]` for the first GEMM that needs them."""
        missing = [c for c in dict.fromkeys(cs) if (x, c) not in self.rank1]
        if missing:
            mm = f"{w}__rank1_gemv"
            # The [K, P] matrix of c's is stored as its one row and expanded by a constant node, which ONNX
            # Runtime folds at load: the file keeps no fp32 matrix besides the codes.
            row = self.const(f"{mm}_row", np.asarray([missing], np.float32))
            shape = self.const(f"{mm}_shape", np.array([k, len(missing)], np.int64))
            nodes = [helper.make_node("Expand", [row, shape], [f"{mm}_weight"], name=f"{mm}_weight"),
                     helper.make_node("MatMul", [x, f"{mm}_weight"], [mm if len(missing) > 1 else f"{w}__rank1"], name=mm)]
            outs = [f"{w}__rank1_{i}" for i in range(len(missing))] if len(missing) > 1 else [f"{w}__rank1"]
            if len(missing) > 1:
                nodes.append(helper.make_node("Split", [mm, self.const(f"{mm}_sizes", np.ones(len(missing), np.int64))],
                                              outs, name=f"{mm}_split", axis=-1))
            self.rank1.update({(x, c): o for c, o in zip(missing, outs, strict=True)})
            self.pending.setdefault(x, []).extend(nodes)
        return [self.rank1[(x, c)] for c in cs]

    def _widen(self, name: str, stored: np.ndarray) -> list[onnx.NodeProto]:
        """Nodes computing int8 `stored − 8` [K, N] from `stored` (0..15) kept two per byte; every input
        is an initializer, so ONNX Runtime's constant folding runs them once, at load."""
        k, n = stored.shape
        even = np.zeros((k, n + n % 2), np.uint8)
        even[:, :n] = stored
        packed = (even[:, 0::2] | (even[:, 1::2] << 4)).astype(np.uint8)
        p = name
        self.const(f"{p}__nibbles", packed)
        self.const(f"{p}__low", np.array(15, np.uint8))
        self.const(f"{p}__four", np.array(4, np.uint8))
        self.const(f"{p}__last", np.array([-1], np.int64))
        self.const(f"{p}__shape", np.array([k, n + n % 2], np.int64))
        self.const(f"{p}__eight", np.array(8, np.int32))
        nodes = [
            helper.make_node("BitwiseAnd", [f"{p}__nibbles", f"{p}__low"], [f"{p}__lo"]),
            helper.make_node("BitShift", [f"{p}__nibbles", f"{p}__four"], [f"{p}__hi"], direction="RIGHT"),
            helper.make_node("Unsqueeze", [f"{p}__lo", f"{p}__last"], [f"{p}__lo3"]),
            helper.make_node("Unsqueeze", [f"{p}__hi", f"{p}__last"], [f"{p}__hi3"]),
            helper.make_node("Concat", [f"{p}__lo3", f"{p}__hi3"], [f"{p}__pairs"], axis=-1),
            helper.make_node("Reshape", [f"{p}__pairs", f"{p}__shape"], [f"{p}__u8"]),
            helper.make_node("Cast", [f"{p}__u8"], [f"{p}__i32"], to=onnx.TensorProto.INT32),
            helper.make_node("Sub", [f"{p}__i32", f"{p}__eight"], [f"{p}__c32"]),
        ]
        if n % 2:
            self.const(f"{p}__start", np.array([0], np.int64))
            self.const(f"{p}__stop", np.array([n], np.int64))
            nodes.append(helper.make_node("Slice", [f"{p}__c32", f"{p}__start", f"{p}__stop", f"{p}__last"], [f"{p}__cut"]))
        nodes.append(helper.make_node("Cast", [f"{p}__cut" if n % 2 else f"{p}__c32"], [name], to=onnx.TensorProto.INT8))
        return nodes

    def gemm(self, ins: list[str], y: str, w: str, n: int = -1) -> list[onnx.NodeProto]:
        """DynamicQuantizeMatMul(X, codes, scale[, zp][, bias]); on an X that several GEMMs share
        (`share_quant`), X is quantized once (DynamicQuantizeLinear) and each GEMM is a MatMulIntegerToFloat
        on it. `n`: the GEMM's width, when `y` is its final value (an Add of an [n] bias after it is taken
        into the kernel, as ORT's own quantizer does)."""
        x = ins[0]
        if x not in self.shared_quant:
            self.report.dynamic_matmul.append(w)
            bias = self.bias_add(y, n)
            if bias is not None:  # the Add of a constant bias that follows, taken into the kernel
                self.absorbed.add(bias.output[0])
                ins = [*ins[:3], ins[3] if len(ins) > 3 else "", bias.input[1] if bias.input[0] == y else bias.input[0]]
                y = bias.output[0]
            return [helper.make_node("DynamicQuantizeMatMul", ins, [y], name=f"{w}__dqmm", domain=MS)]
        self.report.integer_matmul.append(w)
        xq, xs, xz = self.shared_quant[x]
        nodes = self.pending_quant.pop(x, [])
        mif = [xq, ins[1], xs, ins[2], xz] + ins[3:4]
        return [*nodes, helper.make_node("MatMulIntegerToFloat", mif, [y], name=f"{w}__mif", domain=MS)]

    def bias_add(self, y: str, n: int) -> onnx.NodeProto | None:
        """The Add that is `y`'s only reader and adds a constant [n] float vector (a Linear's bias), or None."""
        users = self.consumers.get(y, [])
        if n < 0 or len(users) != 1 or users[0].op_type != "Add" or y in self.graph_outputs:
            return None
        add = users[0]
        other = add.input[1] if add.input[0] == y else add.input[0]
        t = self.float_inits.get(other)
        return add if t is not None and tuple(t.dims) == (n,) else None

    def share_quant(self, x: str) -> None:
        if x not in self.shared_quant:
            self.shared_quant[x] = (f"{x}__q", f"{x}__q_scale", f"{x}__q_zero_point")
            self.pending_quant[x] = [helper.make_node("DynamicQuantizeLinear", [x], list(self.shared_quant[x]),
                                                      name=f"{x}__quantize")]

    def plan_rank1(self, x: str, parts: Sequence[_Part], w: str) -> None:
        """Register one GEMV for the rank-1 terms of all `parts` (one GEMM each on the same X)."""
        cs = []
        k = parts[0].q.shape[1] if parts[0].ref.transposed else parts[0].q.shape[0]
        for p in parts:
            _, scale, offset = _columns(p.q, p.ref.transposed)
            if p.q.symmetric or p.q.granularity == "block":
                continue
            _, c = _zero_point(offset, scale, p.q.bits)
            if np.any(c) and bool(np.all(c == c[0])):
                cs.append(float(c[0]))
        if len(cs) > 1:
            self.rank1_terms(x, k, cs, w)

    def split_of(self, node: onnx.NodeProto, parts: Sequence[_Part]) -> onnx.NodeProto | None:
        """The Split that only cuts `node`'s packed output back into its parts (last axis, the parts'
        widths), or None."""
        if len(parts) < 2 or node.op_type != "MatMul" or node.output[0] in self.graph_outputs:
            return None
        users = self.consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Split" or len(users[0].output) != len(parts):
            return None
        sp = users[0]
        axis = next((a.i for a in sp.attribute if a.name == "axis"), 0)
        widths = [p.q.shape[0] if p.ref.transposed else p.q.shape[1] for p in parts]
        sizes = self.split_sizes.get(sp.input[1]) if len(sp.input) > 1 else None
        if axis != -1 or sizes is None or list(sizes) != widths:
            return None
        return sp

    # -- a Gemm (one row per example: the classifier head) → fp32 weights rebuilt at load -------------
    def at_load(self, node: onnx.NodeProto, w: str, parts: Sequence[_Part]) -> list[onnx.NodeProto]:
        """The Gemm on D·codes + q0 computed from the stored codes by constant nodes (Cast, Mul, Add), which
        ONNX Runtime folds when it loads the file. A GEMM with one row per example gains nothing from an
        integer kernel, while its dynamic quantization, rank-1 term and bias were four nodes per call."""
        if len(parts) != 1 or parts[0].q.granularity == "block" or parts[0].q.bits > 8:
            raise _Unsupported("packed, block-grid or wide codes on a Gemm")
        q = parts[0].q
        codes = q.codes.detach().cpu().to(dtype=torch.int16).numpy()
        rows = q.shape[0]
        per_row = q.granularity == "per-channel"
        scale = q.scale.detach().cpu().float().numpy().reshape((rows, 1) if per_row else ())
        stored = self.const(f"{w}__codes", codes.astype(np.int8 if q.symmetric else np.uint8))
        nodes = [helper.make_node("Cast", [stored], [f"{w}__codes_f"], name=f"{w}__codes_f", to=onnx.TensorProto.FLOAT),
                 helper.make_node("Mul", [f"{w}__codes_f", self.const(f"{w}__scale", scale)],
                                  [f"{w}__scaled" if not q.symmetric else f"{w}__at_load"], name=f"{w}__scaled")]
        if not q.symmetric:
            offset = q.offset.detach().cpu().float().numpy().reshape((rows, 1) if per_row else ())
            nodes.append(helper.make_node("Add", [f"{w}__scaled", self.const(f"{w}__offset", offset)],
                                          [f"{w}__at_load"], name=f"{w}__at_load"))
        moved = onnx.NodeProto()
        moved.CopyFrom(node)
        moved.input[1] = f"{w}__at_load"
        self.report.at_load.append(w)
        return [*nodes, moved]

    # -- packed Q/K/V → QAttention on X widened by the rank-1 features --------------------------------
    def attention_of(self, node: onnx.NodeProto, parts: Sequence[_Part]) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
        """(Split, MultiHeadAttention) when `node` is a packed Q/K/V GEMM whose Split feeds exactly one
        MultiHeadAttention's query, key and value (with at most its bias and key padding mask), on grids
        QAttention can hold: per-tensor codes per projection (asymmetric or symmetric). Else None."""
        split = self.split_of(node, parts)
        if split is None or len(parts) != 3 or any(p.q.granularity != "per-tensor" for p in parts):
            return None
        users = {id(n): n for o in split.output for n in self.consumers.get(o, [])}
        if len(users) != 1 or any(o in self.graph_outputs for o in split.output):
            return None
        mha = next(iter(users.values()))
        attrs = {a.name for a in mha.attribute}
        if (mha.op_type != "MultiHeadAttention" or list(mha.input[:3]) != list(split.output) or len(mha.output) != 1
                or any(mha.input[5:]) or not attrs <= {"num_heads", "scale"}):
            return None
        return split, mha

    def qattention(self, node: onnx.NodeProto, w: str, parts: Sequence[_Part], mha: onnx.NodeProto,
                   nibbles: bool = False) -> tuple[list[onnx.NodeProto], onnx.NodeProto]:
        """Nodes to place at the packed GEMM (quantize X) and the QAttention that replaces `mha`.

        ORT's QAttention runs the packed [K, 3N] integer GEMM and the attention in one kernel, as in
        `onnx-int8-dynamic`; it takes integer zero points only, so each projection p with a residual
        c_p ≠ 0 (W_p = D_p·(W_I − z_p) + c_p) gets one extra input feature f_p = c_p·rowsum(X)/(D_p·m) and
        one extra weight row holding code z_p + m in its own columns (value D_p·m) and z_q (value 0) in
        the others: the extra rows add exactly c_p·rowsum(X) to projection p. The features come from one
        fp32 GEMV and are quantized with X (error ≤ D_p·m·s_x/2 per output, against ≈ √K·s_x·rms(W)
        from quantizing X itself); m = 16 keeps f small beside X's own range."""
        cols = [_columns(p.q, p.ref.transposed) for p in parts]
        symmetric = parts[0].q.symmetric
        shift = 8 if nibbles else 128
        lo, hi = (-(shift - 1), shift - 1) if symmetric else (0, 2 * shift - 1)
        blocks, scales, zps, cs = [], [], [], []
        for p, (codes, scale, offset) in zip(parts, cols, strict=True):
            if codes.min() < lo or codes.max() > hi:
                raise StageError(f"{p.name}: codes in [{codes.min()}, {codes.max()}] outside {lo}..{hi}")
            d, q0 = float(scale[0]), float(offset[0])
            if symmetric:
                blocks.append(codes)
                zps.append(0)
                cs.append(0.0)
            else:
                z, c = _zero_point(np.float64(q0), np.float64(d), p.q.bits)
                blocks.append(codes - shift)
                zps.append(int(z) - shift)
                cs.append(float(c))
            scales.append(d)
        widths = [b.shape[1] for b in blocks]
        col_zp = np.concatenate([np.full(n, z, np.int64) for n, z in zip(widths, zps, strict=True)])
        featured = [i for i, c in enumerate(cs) if c != 0.0]
        k = cols[0][0].shape[0]
        extra = np.tile(col_zp, (_padded(k, len(featured)) if featured else 0, 1))  # padding rows: value 0
        v = np.zeros((1, len(extra)), np.float32)
        start = np.cumsum([0, *widths])
        for r, i in enumerate(featured):
            m = _feature_code(zps[i])
            extra[r, start[i]:start[i + 1]] = zps[i] + m
            v[0, r] = cs[i] / (scales[i] * m)
        x = node.input[0]
        nodes: list[onnx.NodeProto] = []
        codes = np.concatenate(blocks, axis=1)
        weight = f"{w}__qkv_codes"
        if nibbles and not featured:
            nodes += self._widen(weight, codes + 8)
        elif nibbles:  # 4-bit codes kept two per byte, widened and the extra rows appended at load
            nodes += self._widen(f"{w}__qkv_nibbles", codes + 8)
            rows = self.const(f"{w}__feature_rows", extra.astype(np.int8))
            nodes.append(helper.make_node("Concat", [f"{w}__qkv_nibbles", rows], [weight], name=weight, axis=0))
        else:
            self.const(weight, np.concatenate([codes, extra], axis=0).astype(np.int8))
        xin = x
        if featured:
            more, xin = self.features(x, k, v[0].tolist(), w)
            nodes += more
            self.report.corrections += len(featured)
        xq = (f"{w}__xq", f"{w}__xq_scale", f"{w}__xq_zero_point")
        nodes.append(helper.make_node("DynamicQuantizeLinear", [xin], list(xq), name=f"{w}__quantize"))
        col_scale = np.concatenate([np.full(n, s, np.float32) for n, s in zip(widths, scales, strict=True)])
        uniform = bool(np.all(col_scale == col_scale[0])) and bool(np.all(col_zp == col_zp[0]))
        ws = self.const(f"{w}__qkv_scale", np.asarray(col_scale[0] if uniform else col_scale, np.float32))
        wz = self.const(f"{w}__qkv_zero_point", np.asarray(col_zp[0] if uniform else col_zp, np.int8))
        bias = mha.input[3] if len(mha.input) > 3 and mha.input[3] else \
            self.const(f"{w}__qkv_bias", np.zeros(sum(widths), np.float32))
        mask = mha.input[4] if len(mha.input) > 4 else ""
        attrs = {a.name: helper.get_attribute_value(a) for a in mha.attribute}
        qattn = helper.make_node("QAttention", [xq[0], weight, bias, xq[1], ws, mask, xq[2], wz], list(mha.output),
                                 name=f"{mha.name}__qattention", domain=MS, **attrs)
        self.report.qattention.extend(p.name for p in parts)
        return nodes, qattn

    def row_shift_invisible(self, tensor: str) -> bool:
        """True when adding the same number to every element of a row of `tensor` cannot change the
        graph's outputs: every path from it is sums (Add: residual or bias; SkipLayerNormalization's sum output)
        that end in LayerNormalizations over the last axis, which subtract the row mean."""
        seen: set[str] = set()
        stack = [tensor]
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in self.graph_outputs or not self.consumers.get(t):
                return False
            for n in self.consumers[t]:
                axis = next((a.i for a in n.attribute if a.name == "axis"), -1)
                if n.op_type == "LayerNormalization" and n.input[0] == t and axis == -1:
                    if any(o for o in n.output[1:]):  # its Mean output would see the shift
                        return False
                    continue
                if n.op_type == "SkipLayerNormalization" and t in n.input[:2]:
                    if any(o for o in n.output[1:3]):  # mean / inverse std-dev outputs would see the shift
                        return False
                    if len(n.output) > 3 and n.output[3]:
                        stack.append(n.output[3])
                    continue
                if n.op_type == "Add":
                    # A residual sum or a bias (the fused CPU graph adds the bias, then the residual, before its
                    # LayerNormalization): broadcasting keeps the last axis last, so a row shift of `t` is one of the sum.
                    stack.append(n.output[0])
                    continue
                return False
        return True

    # -- 4-bit: MatMulNBits with float zero points ---------------------------------------------------
    def matmul_nbits(self, node: onnx.NodeProto, w: str, parts: Sequence[_Part], level: int) -> list[onnx.NodeProto]:
        cols = [_columns(p.q, p.ref.transposed) for p in parts]
        codes = np.concatenate([c[0] for c in cols], axis=1)  # [K, N]
        k, n = codes.shape
        q = parts[0].q
        if q.granularity == "block":
            bs = q.group_size
            if bs < 16 or bs & (bs - 1):
                raise _Unsupported(f"block {bs} is not a power of two ≥ 16 (MatMulNBits)")
            scale = np.concatenate([c[1] for c in cols], axis=1)  # [nb, N]
            offset = np.concatenate([c[2] for c in cols], axis=1)
        else:
            bs = _pow2_block(k)
            nb = -(-k // bs)
            scale = np.tile(np.concatenate([c[1] for c in cols])[None, :], (nb, 1))
            offset = np.tile(np.concatenate([c[2] for c in cols])[None, :], (nb, 1))
        nb = scale.shape[0]
        if q.symmetric:
            codes = codes + 8  # signed ±7 → 1..15 around MatMulNBits' default zero point 8
            zp = None
        else:
            zp = (-offset / scale).T.reshape(-1).astype(np.float32)  # [N * nb]: (W_I − zp)·D = D·W_I + q0
        if codes.min() < 0 or codes.max() > 15:
            raise StageError(f"{w}: 4-bit codes outside 0..15")
        padded = np.zeros((nb * bs, n), np.uint8)
        padded[:k] = codes
        blocks = padded.T.reshape(n, nb, bs)
        packed = (blocks[..., 0::2] | (blocks[..., 1::2] << 4)).astype(np.uint8)
        ins = [node.input[0], self.const(f"{w}__codes4", packed),
               self.const(f"{w}__scales", scale.T.reshape(-1).astype(np.float32))]
        if zp is not None:
            ins.append(self.const(f"{w}__zero_points", zp))
        self.report.matmul_nbits.append(w)
        return [helper.make_node("MatMulNBits", ins, [node.output[0]], name=f"{w}__nbits", domain=MS,
                                 K=k, N=n, bits=4, block_size=bs, accuracy_level=level)]

    # -- embedding tables: GatherBlockQuantized -------------------------------------------------------
    def gather(self, node: onnx.NodeProto, w: str, part: _Part) -> list[onnx.NodeProto]:
        q = part.q
        if part.ref.transposed:
            raise _Unsupported("transposed table")
        rows, h = q.shape
        codes = q.codes.detach().cpu().to(dtype=torch.int16).numpy().astype(np.int64)
        scale = q.scale.detach().cpu().double().numpy()
        offset = q.offset.detach().cpu().double().numpy()
        bits = 4 if q.bits <= 4 else 8
        if bits == 8 and q.granularity == "per-tensor":
            return self.gather_dequantize(node, w, q, codes, float(scale.reshape(-1)[0]), float(offset.reshape(-1)[0]))
        mid = 2 ** (bits - 1)  # GatherBlockQuantized's default zero point (8 or 128)
        if q.granularity == "block":
            if not q.symmetric:
                raise _Unsupported("asymmetric block grid on a table (GatherBlockQuantized zero points are integers)")
            bs = q.group_size
            if bs < 16 or bs & (bs - 1):
                raise _Unsupported(f"table block {bs} is not a power of two ≥ 16")
            scales = scale.reshape(rows, -(-h // bs))
            if h % bs:
                # A shorter last block (width 160 in blocks of 64: 64 + 64 + 32): GatherBlockQuantized wants equal
                # blocks dividing the width, so use the largest power of two dividing both the block and the last
                # block's length, each scale repeated over the sub-blocks of its block (the same grid, exactly).
                sub = bs
                while (h % bs) % sub:
                    sub //= 2
                if sub < 16:
                    raise _Unsupported(f"table block {bs} leaves a last block of {h % bs}, no power of two ≥ 16 divides it")
                counts = [bs // sub] * (h // bs) + [(h % bs) // sub]
                scales, bs = np.repeat(scales, counts, axis=1), sub
            row_offset = None
        else:
            bs = _pow2_block(h, cap=h)
            if h % bs:
                raise _Unsupported(f"table width {h} has no power-of-two block ≥ 16")
            per_row = scale.reshape(-1)
            scales = np.broadcast_to(per_row.reshape(-1, 1) if per_row.size > 1 else per_row.reshape(1, 1),
                                     (rows, h // bs))
            row_offset = None if q.symmetric else offset.reshape(-1)
        stored = _table_codes(w, codes, bits, q.symmetric)
        if bits == 4:
            stored = (stored[:, 0::2] | (stored[:, 1::2] << 4)).astype(np.uint8)
        g = f"{w}__gathered"
        ins = [self.const(f"{w}__codes", stored), node.input[1], self.const(f"{w}__scales", np.ascontiguousarray(scales, np.float32))]
        nodes = [helper.make_node("GatherBlockQuantized", ins, [g if row_offset is not None else node.output[0]],
                                  name=f"{w}__gbq", domain=MS, gather_axis=0, quantize_axis=1, block_size=bs, bits=bits)]
        if row_offset is not None and self.row_shift_invisible(node.output[0]):
            # Each looked-up row is off by its own constant (q0 + mid·D), which the LayerNorm after the
            # embedding sum subtracts: the Add would change nothing.
            self.report.corrections_dropped.append(w)
            row_offset = None
            nodes[0].output[0] = node.output[0]
        if row_offset is not None:
            # (c − mid)·D + (q0 + mid·D) = D·c + q0
            off = (row_offset + mid * scale.reshape(-1)).astype(np.float32)
            if off.size == 1:
                nodes.append(helper.make_node("Add", [g, self.const(f"{w}__offset", off.reshape(()))], [node.output[0]],
                                              name=f"{w}__offset"))
            else:
                nodes += [helper.make_node("Gather", [self.const(f"{w}__row_offset", off.reshape(-1, 1)), node.input[1]],
                                           [f"{w}__offsets"], name=f"{w}__row_offset", axis=0),
                          helper.make_node("Add", [g, f"{w}__offsets"], [node.output[0]], name=f"{w}__offset")]
        self.report.gather_quantized.append(w)
        return nodes

    def gather_dequantize(self, node: onnx.NodeProto, w: str, q: CodesLike, codes: np.ndarray, scale: float,
                          offset: float) -> list[onnx.NodeProto]:
        """An 8-bit table with one scale: Gather on the uint8 codes, then DequantizeLinear with a scalar scale
        and the grid's integer zero point, as ONNX Runtime's own INT8 files do. GatherBlockQuantized would
        store its scale once per block of every row (6 % of the table at width 192, block 64) and costs
        more per call at batch 1."""
        stored = _table_codes(w, codes, 8, q.symmetric)
        if q.symmetric:
            zp, c = 128, 0.0
        else:
            z, cs = _zero_point(np.array([offset]), np.array([scale]), 8)
            zp, c = int(z[0]), float(cs[0])
        g = f"{w}__gathered"
        out = node.output[0]
        if c and self.row_shift_invisible(out):
            # the paper's grid: every looked-up value is off by the same c, which the LayerNorm after the
            # embedding sum subtracts, so the Add would change nothing
            self.report.corrections_dropped.append(w)
            c = 0.0
        dq_out = f"{w}__dequantized" if c else out
        nodes = [helper.make_node("Gather", [self.const(f"{w}__codes", stored), node.input[1]], [g],
                                  name=f"{w}__gather", axis=0),
                 helper.make_node("DequantizeLinear", [g, self.const(f"{w}__scale", np.array(scale, np.float32)),
                                                       self.const(f"{w}__zero_point", np.array(zp, np.uint8))],
                                  [dq_out], name=f"{w}__dequantize")]
        if c:
            nodes.append(helper.make_node("Add", [dq_out, self.const(f"{w}__offset", np.array(c, np.float32))], [out],
                                          name=f"{w}__offset"))
        self.report.gather_dequantized.append(w)
        return nodes


def to_integer_kernels_(
    model: onnx.ModelProto,
    refs: Mapping[str, InitializerRef],
    quantized: Mapping[str, CodesLike],
    packed: Mapping[str, Sequence[str]] | None = None,
    four_bit: bool = False,
    int4_kernel: str = "matmulnbits-acc0",
) -> IntegerReport:
    """In place: every MatMul / Gather whose weight initializer holds quantized parameters (directly, or
    packed: `packed[name]` lists the source initializers side by side along the output columns) runs on
    an integer kernel with the variant's own codes; other quantized weights (Gemm, unsupported grids)
    become codes + DequantizeLinear in the 8-bit container. `model`'s float initializers must already
    hold the variant's values (they are what biases, LayerNorm and non-quantized weights keep).

    `four_bit`: tables go to 4-bit GatherBlockQuantized and MatMul weights to `int4_kernel` (one of
    `INT4_KERNELS`); otherwise DynamicQuantizeMatMul and 8-bit tables.
    """
    if int4_kernel not in INT4_KERNELS:
        raise StageError(f"int4 kernel {int4_kernel!r}: use one of {', '.join(INT4_KERNELS)}")
    accuracy_level = int(int4_kernel[-1]) if int4_kernel.startswith("matmulnbits") else 0
    graph = model.graph
    packed = dict(packed or {})
    inits = {i.name: i for i in graph.initializer}
    b = _Builder(model)
    b.report.accuracy_level = accuracy_level if four_bit and int4_kernel.startswith("matmulnbits") else None
    b.report.int4_kernel = int4_kernel if four_bit else None
    b.report.packed = {k: list(v) for k, v in packed.items()}

    def parts_of(name: str) -> list[_Part] | None:
        names = list(packed.get(name, [name]))
        out = []
        for src in names:
            ref = refs.get(src)
            q = quantized.get(ref.param) if ref is not None else None
            if q is None:
                return None
            out.append(_Part(src, ref, q))
        return out

    new_nodes: list[onnx.NodeProto] = []
    unsplit: set[str] = set()  # first outputs of the Splits made redundant by per-projection GEMMs
    # MultiHeadAttention nodes → their QAttention, placed where the MHA was (its mask may be computed
    # after the packed GEMM)
    attention: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        if node.op_type == "Split" and node.output and node.output[0] in unsplit:
            continue
        if node.op_type == "Add" and node.output[0] in b.absorbed:
            continue
        if node.op_type == "MultiHeadAttention" and node.output[0] in attention:
            new_nodes.append(attention.pop(node.output[0]))
            continue
        slot = 1 if node.op_type in ("MatMul", "Gemm") else 0 if node.op_type == "Gather" else None
        w = node.input[slot] if slot is not None and len(node.input) > slot else None
        parts = parts_of(w) if w in inits else None
        if not parts:
            new_nodes.append(node)
            continue
        after: list[onnx.NodeProto] = []
        try:
            if node.op_type == "Gemm" and not (four_bit and int4_kernel != "int8-at-load") and _plain_linear(node):
                _check_parts(parts)
                new_nodes += b.at_load(node, w, parts)
                continue
            if node.op_type == "Gemm":
                node, parts, after = _gemm_as_matmul(node, parts)
            _check_parts(parts)
            if node.op_type == "Gather":
                if len(parts) != 1 or any(a.name == "axis" and a.i != 0 for a in node.attribute):
                    raise _Unsupported("gather along an axis other than 0")
                new_nodes += b.gather(node, w, parts[0])
            elif (int8_gemm := not four_bit or (int4_kernel == "int8-at-load" and parts[0].q.granularity != "block")) and \
                    (site := b.attention_of(node, parts)) is not None:
                split, mha = site
                pre, attention[mha.output[0]] = b.qattention(node, w, parts, mha, nibbles=four_bit)
                new_nodes += pre
                unsplit.add(split.output[0])
            elif int8_gemm and parts[0].q.granularity != "block" and (split := b.split_of(node, parts)) is not None:
                # One GEMM per projection, written straight to the Split's outputs: the packed GEMM's
                # Split is a full copy of Q, K and V, and each projection's correction is one Add either
                # way. X is quantized once for the three (as QAttention does).
                b.plan_rank1(node.input[0], parts, w)
                b.share_quant(node.input[0])
                per: list[onnx.NodeProto] = []  # placed only once every projection is built
                for p, out in zip(parts, split.output, strict=True):
                    one = helper.make_node("MatMul", [node.input[0], p.name], [out], name=f"{node.name}__{p.name}")
                    per += b.dynamic_matmul(one, p.name, [p], nibbles=four_bit)
                new_nodes += per
                unsplit.add(split.output[0])
            elif int8_gemm:
                new_nodes += b.dynamic_matmul(node, w, parts, nibbles=four_bit)
            else:
                new_nodes += b.matmul_nbits(node, w, parts, accuracy_level)
            new_nodes += after
        except _Unsupported as why:
            b.report.fallback[w] = str(why)
            new_nodes += _dequantized(node, slot, w, parts, inits[w], b.inits) + after
    # the float copies of replaced weights are dropped below (nothing reads them any more)
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used] + [i for i in b.inits if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    return b.report


def _plain_linear(node: onnx.NodeProto) -> bool:
    """Gemm(A, W, C) = A·Wᵀ + C (transB = 1, no transA, alpha = beta = 1): W in the torch layout."""
    attrs = {a.name: (a.i if a.type == onnx.AttributeProto.INT else a.f) for a in node.attribute}
    return not attrs.get("transA", 0) and attrs.get("transB", 0) == 1 and attrs.get("alpha", 1.0) == 1.0 \
        and attrs.get("beta", 1.0) == 1.0


def _gemm_as_matmul(node: onnx.NodeProto, parts: list[_Part]) -> tuple[onnx.NodeProto, list[_Part], list[onnx.NodeProto]]:
    """Gemm(A, W, C) with transB=1 (a Linear on [batch, H]: the classifier head) as MatMul(A, Wᵀ) + C."""
    attrs = {a.name: (a.i if a.type == onnx.AttributeProto.INT else a.f) for a in node.attribute}
    if attrs.get("transA", 0) or not attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise _Unsupported("Gemm other than A·Wᵀ + C")
    y = node.output[0]
    mm = helper.make_node("MatMul", [node.input[0], node.input[1]], [f"{y}__mm" if len(node.input) > 2 else y], name=node.name)
    flipped = [_Part(p.name, InitializerRef(p.ref.name, p.ref.param, not p.ref.transposed), p.q) for p in parts]
    after = [helper.make_node("Add", [f"{y}__mm", node.input[2]], [y], name=f"{node.name}__bias")] if len(node.input) > 2 else []
    return mm, flipped, after


def _dequantized(node: onnx.NodeProto, slot: int, w: str, parts: Sequence[_Part], init: onnx.TensorProto,
                 inits: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Codes + DequantizeLinear (8-bit container) producing the weight, concatenated when packed."""
    fdtype = helper.tensor_dtype_to_np_dtype(init.data_type)
    nodes: list[onnx.NodeProto] = []
    outs = []
    for p in parts:
        out = f"{p.name}__weight" if len(parts) > 1 else f"{w}__weight"
        ns, ins = dequant_nodes(out, p.q, p.ref.transposed, "int8", fdtype)
        nodes += ns
        inits += ins
        outs.append(out)
    if len(outs) > 1:
        nodes.append(helper.make_node("Concat", outs, [f"{w}__weight"], name=f"{w}__concat", axis=1))
    moved = onnx.NodeProto()
    moved.CopyFrom(node)
    moved.input[slot] = f"{w}__weight"
    return [*nodes, moved]


def integer_model(
    template: onnx.ModelProto,
    refs: Mapping[str, InitializerRef],
    quantized: Mapping[str, CodesLike],
    values: Mapping[str, torch.Tensor],
    num_heads: int,
    hidden_size: int,
    four_bit: bool = False,
    int4_kernel: str = "matmulnbits-acc0",
    fuse: bool = True,
) -> tuple[onnx.ModelProto, IntegerReport, dict[str, Any]]:
    """The exported graph with the variant's values, fused for CPU (packed-QKV MultiHeadAttention and
    ORT's transformer fusions, quantize-after-fusing with the packed codes kept per projection), then
    its quantized weights on integer kernels. Returns (model, report, graph-optimization dict)."""
    from tlc_export.export.optimize import GraphOptimization, optimize_proto
    from tlc_export.export.qdq import rewrite_weights

    if any(q.granularity == "block" for q in quantized.values()):
        from tlc_export.export.int4 import to_opset21

        template = to_opset21(template)  # a fallback DequantizeLinear of block codes needs opset 21
    rewrite_weights(template, refs, {}, values)
    packed: dict[str, list[str]] = {}
    if fuse:
        model, opt = optimize_proto(template, num_heads, hidden_size, packed=packed)
    else:
        model, opt = template, GraphOptimization(False, reason="not fused (fuse=False)")
    report = to_integer_kernels_(model, refs, quantized, packed, four_bit=four_bit, int4_kernel=int4_kernel)
    return model, report, opt.to_dict()
