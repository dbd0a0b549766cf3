"""ONNX Runtime CPU sessions, as a deployment should open a file (no torch: serving imports this)."""

from __future__ import annotations

import os
from typing import Any

# ORT's C++ graph transformer (EXTENDED level) that fuses Add + LayerNormalization, when the sum has one reader,
# into com.microsoft.SkipLayerNormalization at load: its CPU kernel took 3-4x the time of the ops it replaces
# (onnxruntime 1.32, 2-core EPYC), and `export.optimize` writes those sums unfused for that reason.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def cpu_session(model: str | bytes | os.PathLike[str], opts: Any = None) -> Any:
    """`onnxruntime.InferenceSession` of a file (or serialized model bytes) on the CPU provider with
    `opts`, without the load-time optimizers of `CPU_DISABLED_OPTIMIZERS`."""
    import onnxruntime as ort

    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=opts,
                                providers=["CPUExecutionProvider"], disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS))


def session(path: str | bytes | os.PathLike[str], threads: int | None = None, exact: bool = False) -> Any:
    """A CPU InferenceSession with default graph optimizations (less `CPU_DISABLED_OPTIMIZERS`), as a
    deployment should open the file (or serialized model bytes).

    `exact=True` stops ORT from fusing DequantizeLinear(INT4)+MatMul into MatMulNBits with int8
    activations (its CPU default, accuracy level 4, ~1e-2 relative logit error): the weight check
    then sees the stored function, not that run-time approximation.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if exact:
        opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return cpu_session(path, opts)
