"""TensorRT: deserialize a built engine and run it with torch-owned CUDA buffers (TensorRT 10 API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime_bench.backends.base import Backend, Dtype
from tlc_export.errors import StageError


class TensorRT(Backend):
    name = "tensorrt"

    def __init__(self, device: str = "cuda", threads: int | None = None) -> None:
        super().__init__(device, threads)
        self.engine: Any = None
        self.context: Any = None
        self._io: list[tuple[str, bool, Any]] = []  # (name, is_input, torch dtype)

    def available(self, dtype: Dtype = "fp32") -> tuple[bool, str]:
        try:
            import torch
        except ImportError:
            return False, "torch is needed for CUDA buffers"
        if not torch.cuda.is_available():
            return False, "TensorRT needs a CUDA device; none here"
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return False, "the tensorrt Python package is not installed (pip install tensorrt, on a CUDA machine)"
        if dtype != "fp32":
            return False, "an engine fixes its own precision; run it as dtype fp32"
        return True, ""

    def load(self, source: str | Path | Any, dtype: Dtype = "fp32") -> None:
        self.check(dtype)
        import tensorrt as trt
        import torch

        path = Path(source)
        if not path.is_file():
            raise StageError(f"{path}: TensorRT engine not found; build it in the export stage")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise StageError(
                f"{path}: TensorRT could not deserialize the engine (built by another TensorRT version "
                "or for another GPU?); rebuild it on this machine"
            )
        self.context = self.engine.create_execution_context()
        self._io = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_in = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            np_t = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            torch_t = torch.from_numpy(np.zeros(1, dtype=np_t)).dtype
            self._io.append((name, is_in, torch_t))
        self._stream = torch.cuda.Stream()

    def prepare(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any:
        import torch

        given = {"input_ids": input_ids, "attention_mask": attention_mask}
        buffers: dict[str, torch.Tensor] = {}
        for name, is_in, tt in self._io:
            if not is_in:
                continue
            if name not in given:
                raise StageError(f"engine input `{name}` is not one the benchmark provides (input_ids, attention_mask)")
            t = torch.from_numpy(np.ascontiguousarray(given[name])).to("cuda", dtype=tt)
            buffers[name] = t
            if not self.context.set_input_shape(name, tuple(t.shape)):
                raise StageError(
                    f"shape {tuple(t.shape)} for `{name}` is outside the engine's optimisation profile; "
                    "rebuild with larger export.trt_max_batch / trt_max_seq_len"
                )
        out_name = None
        for name, is_in, tt in self._io:
            if is_in:
                continue
            shape = tuple(self.context.get_tensor_shape(name))
            buffers[name] = torch.empty(shape, dtype=tt, device="cuda")
            out_name = out_name or name
        for name, t in buffers.items():
            self.context.set_tensor_address(name, int(t.data_ptr()))
        return buffers, out_name

    def forward(self, prepared: Any) -> Any:
        buffers, out_name = prepared
        if not self.context.execute_async_v3(self._stream.cuda_stream):
            raise StageError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        return buffers[out_name]

    def sync(self) -> None:
        self._stream.synchronize()

    def to_numpy(self, out: Any) -> np.ndarray:
        self.sync()
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.context = None
        self.engine = None

    def describe(self) -> dict[str, Any]:
        return {"device": "cuda"}
