"""ONNX Runtime's own quantizers, applied to our fp32 file (their grids, not the compress stage's).

- `onnx-int8-dynamic`: `quantize_dynamic` (weights INT8, activations quantized at run time), on
  MatMul/Gemm weights *and* the embedding Gather tables (ORT's own default op set would do the same):
  the file is ~0.25× the fp32 one instead of ~0.55× with the tables left in fp32;
- `onnx-int8-static`: `quantize_static`, QDQ, symmetric INT8 activations (per-tensor) and
  per-channel symmetric weights, calibrated on train-split sentences — the form TensorRT consumes;
- `onnx-int4-matmulnbits`: `MatMulNBitsQuantizer`, block-wise symmetric INT4 on MatMul and the
  embedding Gather (ORT-only op; TensorRT cannot parse it).

All run `quant_pre_process` first (shape inference + ORT graph optimizations that quantization
expects) and write atomically.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from tlc_export.atomic import atomic_path
from tlc_export.errors import StageError
from tlc_export.export.validate import Batch


def pre_process(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src).resolve(), Path(dst).resolve()
    # When symbolic shape inference gives up, onnxruntime saves what it got as
    # `sym_shape_infer_temp.onnx` plus external-data files into the *working directory*; run it from
    # a scratch folder so a user's directory never collects them.
    with tempfile.TemporaryDirectory(dir=dst.parent) as scratch, _working_dir(scratch):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - symbolic shape inference fails on some dynamo graphs
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


@contextlib.contextmanager
def _working_dir(path: str) -> Iterator[None]:
    """`contextlib.chdir` (Python ≥ 3.11) for 3.10 as well."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


class BatchReader:
    """`CalibrationDataReader` over padded batches (imported lazily: ORT is optional at import time)."""

    def __new__(cls, batches: Sequence[Batch]):
        from onnxruntime.quantization import CalibrationDataReader

        class _Reader(CalibrationDataReader):
            def __init__(self, items: Sequence[Batch]) -> None:
                self._items = list(items)
                self._it: Iterator[Batch] = iter(self._items)

            def get_next(self) -> dict[str, np.ndarray] | None:
                b = next(self._it, None)
                return None if b is None else b.feeds()

            def rewind(self) -> None:
                self._it = iter(self._items)

        return _Reader(batches)


def _with_preprocessed(src: Path, out: Path, fn) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent) as td:
        pre = Path(td) / "pre.onnx"
        pre_process(src, pre)
        with atomic_path(out, suffix=".onnx") as tmp:
            fn(pre, tmp)


DYNAMIC_OP_TYPES = ("MatMul", "Gemm", "Attention", "Gather")


def has_contrib_ops(path: str | os.PathLike[str]) -> bool:
    """True when the graph uses com.microsoft operators (a graph the transformer optimizer fused)."""
    return any(n.domain == "com.microsoft" for n in onnx.load(str(path), load_external_data=False).graph.node)


def quantize_int8_dynamic(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """INT8 weights, dynamically quantized activations (ORT's CPU-fast form).

    `src` may be the fused graph of `tlc_export.export.optimize`: its `Attention` nodes become
    `QAttention`, and its contrib ops carry no type information the quantizer can read, so
    `DefaultTensorType` tells it they compute fp32. The embedding tables (`Gather`) are quantized too
    (8-bit rows, dequantized after the lookup), as ONNX Runtime's default does: they are most of a
    small model's bytes, and a lookup costs nothing to dequantize.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT} if has_contrib_ops(src) else {}
    _with_preprocessed(Path(src), out, lambda pre, tmp: quantize_dynamic(
        str(pre), str(tmp), weight_type=QuantType.QInt8, per_channel=False,
        op_types_to_quantize=list(DYNAMIC_OP_TYPES), extra_options=extra))


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose two inputs are both computed (neither a weight nor folded from
    constants): attention's batched matmuls, Q·Kᵀ and softmax·V. Unnamed nodes are named in place."""
    const = {i.name for i in model.graph.initializer}
    out = []
    for k, n in enumerate(model.graph.node):
        if n.op_type == "Constant" or (n.input and all(x in const for x in n.input if x)):
            const.update(n.output)  # a weight reached through Transpose/Cast/... of constants stays a weight
            continue
        if n.op_type == "MatMul" and not any(x in const for x in n.input):
            if not n.name:
                n.name = f"tlc_activation_matmul_{k}"
            out.append(n.name)
    return out


def quantize_int8_static(src: str | os.PathLike[str], out: str | os.PathLike[str], calibration: Sequence[Batch],
                         attention_matmuls: bool = False) -> list[str]:
    """QDQ INT8, symmetric activations and per-channel symmetric weights (TensorRT's form). Returns the
    activation × activation MatMuls left in float (none with `attention_matmuls`).

    Biases stay float (`QuantizeBias` off): ORT would store them as INT32 codes with scale = activation
    scale × weight scale (~1e-6), below fp16's normal range once the file becomes the fp16 TensorRT
    graph, and TensorRT adds float biases anyway.
    `attention_matmuls` (`export.int8_attention_matmuls`): also quantize attention's batched matmuls,
    whose inputs are both activations, the softmax probabilities among them: one per-tensor INT8 scale
    over probabilities that span orders of magnitude is an accuracy risk, so it is off unless asked
    for; either way the file is validated against PyTorch like every export.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise StageError("onnx-int8-static: no calibration batches; set export.calibration_samples ≥ 1")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    excluded: list[str] = []

    def run(pre: Path, tmp: Path) -> None:
        if not attention_matmuls:
            model = onnx.load(str(pre))
            excluded.extend(activation_matmuls(model))
            onnx.save_model(model, str(pre))  # with the names given to unnamed nodes
        quantize_static(
            str(pre), str(tmp), BatchReader(calibration),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            per_channel=True, op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=list(excluded),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )

    _with_preprocessed(Path(src), out, run)
    return excluded


def quantize_int4_matmulnbits(src: str | os.PathLike[str], out: str | os.PathLike[str], block_size: int = 32) -> None:
    """MatMulNBits INT4 (block `block_size`, symmetric) on MatMul weights and the embedding Gather."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )
    from onnxruntime.quantization.quant_utils import QuantFormat

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def run(pre: Path, tmp: Path) -> None:
        algo = DefaultWeightOnlyQuantConfig(
            block_size=block_size, is_symmetric=True, quant_format=QuantFormat.QOperator,
            op_types_to_quantize=("MatMul", "Gather"), quant_axes=(("MatMul", 0), ("Gather", 1)),
        )
        q = MatMulNBitsQuantizer(
            onnx.load(str(pre)), block_size=block_size, is_symmetric=True,
            op_types_to_quantize=("MatMul", "Gather"), quant_axes=(("MatMul", 0), ("Gather", 1)),
            algo_config=algo,
        )
        q.process()
        onnx.save_model(q.model.model, str(tmp))

    _with_preprocessed(Path(src), out, run)
