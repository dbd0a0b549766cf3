"""Backends by name. Each is imported lazily so a missing runtime never breaks the others."""

from __future__ import annotations

import importlib

from runtime_bench.backends.base import Backend

_BACKENDS = {
    "torch-eager": ("runtime_bench.backends.torch_backend", "TorchEager"),
    "torch-compile": ("runtime_bench.backends.torch_backend", "TorchCompile"),
    "torch-int8": ("runtime_bench.backends.torch_backend", "TorchInt8"),
    "torch-int4": ("runtime_bench.backends.torch_backend", "TorchInt4"),
    "onnxruntime": ("runtime_bench.backends.onnxruntime_backend", "OnnxRuntime"),
    "tensorrt": ("runtime_bench.backends.tensorrt_backend", "TensorRT"),
}

BACKEND_NAMES = tuple(_BACKENDS)
TORCH_BACKENDS = ("torch-eager", "torch-compile", "torch-int8", "torch-int4")


def get_backend(name: str, device: str | None = None, threads: int | None = None) -> Backend:
    """A fresh, unloaded backend. `device`: torch "cpu"/"cuda"; onnxruntime "cpu"/"cuda"/"tensorrt"."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend `{name}`; choose from {', '.join(_BACKENDS)}")
    module, cls = _BACKENDS[name]
    klass = getattr(importlib.import_module(module), cls)
    kwargs = {"threads": threads}
    if device is not None:
        kwargs["device"] = device
    return klass(**kwargs)


__all__ = ["BACKEND_NAMES", "TORCH_BACKENDS", "Backend", "get_backend"]
