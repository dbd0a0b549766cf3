"""Plain ONNX Runtime CPU sessions, as a deployment opens a file (no torch: serving imports this)."""

from __future__ import annotations

import os


def session(path: str | bytes | os.PathLike[str], threads: int | None = None, exact: bool = False):
    """A plain CPU InferenceSession, as a user would open the file (or serialized model bytes).

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
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), sess_options=opts, providers=["CPUExecutionProvider"])
