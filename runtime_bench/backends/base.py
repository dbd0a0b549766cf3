"""The one interface every runtime implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tlc_export.errors import BackendUnavailable

Dtype = str  # "fp32" | "fp16" | "bf16"


class Backend(ABC):
    """Load one model artifact and run classifier forward passes on it.

    `run` is the contract (numpy in, numpy logits out). Timing loops call `prepare` once and then
    `forward` + `sync` repeatedly, so host<->device copies of the inputs are not part of latency.
    """

    name: ClassVar[str]
    dtypes: ClassVar[tuple[Dtype, ...]] = ("fp32",)
    # True: a runtime with its own device allocator (ONNX Runtime, TensorRT): its memory on CUDA is read from
    # the driver (cudaMemGetInfo deltas), not from torch's allocator statistics.
    memory_from_device: ClassVar[bool] = False

    def __init__(self, device: str = "cpu", threads: int | None = None) -> None:
        self.device = device
        self.threads = threads
        self.dtype: Dtype = "fp32"

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @abstractmethod
    def available(self, dtype: Dtype = "fp32") -> tuple[bool, str]:
        """(True, "") when this backend can run `dtype` here, else (False, why)."""

    def check(self, dtype: Dtype = "fp32") -> None:
        ok, reason = self.available(dtype)
        if not ok:
            raise BackendUnavailable(f"{self.name}: {reason}")

    @abstractmethod
    def load(self, source: str | Path | Any, dtype: Dtype = "fp32") -> None:
        """Load an artifact (file or model folder; torch backends also take an nn.Module)."""

    def prepare(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any:
        """Inputs in the backend's native form (device tensors, feed dicts)."""
        return input_ids, attention_mask

    @abstractmethod
    def forward(self, prepared: Any) -> Any:
        """One forward pass on prepared inputs; may return before the device finishes."""

    @abstractmethod
    def to_numpy(self, out: Any) -> np.ndarray:
        """Logits as float32 numpy [batch, num_labels]."""

    def sync(self) -> None:
        """Wait for queued device work (no-op on synchronous runtimes)."""
        return None

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.to_numpy(self.forward(self.prepare(input_ids, attention_mask)))

    def close(self) -> None:
        """Free the session / model."""
        return None

    def describe(self) -> dict[str, Any]:
        """Extra row fields (provider, compile mode, replaced layers, `runtime_version`...)."""
        return {}

    def runtime_memory_bytes(self) -> int | None:
        """Device memory the runtime reserves for running the model outside torch's allocator, where its API
        reports it (None: none, or not reported). Informational: it is allocated when the model loads, so
        `model_mem_bytes` (a cudaMemGetInfo delta over the load) already holds it."""
        return None
