"""TensorRT: deserialize a built engine and run it with torch-owned CUDA buffers (TensorRT 10.x and 11.x).

Stream discipline: the engine is enqueued on torch's *current* stream, the stream the input copies
are made on and the one the harness's CUDA events record on. So the copies are ordered before the
engine without any `wait_stream`, and the events time the engine itself (an engine on a private
stream would finish outside the events and show near-zero latency).

Profiles: an engine built by `tlc_export.export.tensorrt` holds one optimization profile per
benchmarked batch size (opt = that batch), so batch 1 runs kernels tuned for batch 1; `prepare`
activates the profile made for the input's batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime_bench.backends.base import Backend, Dtype
from tlc_export.errors import StageError


class CudaOps:
    """The few torch.cuda calls the backend makes, in one place (tests substitute fakes on the CPU)."""

    device = "cuda"

    def available(self) -> bool:
        return torch.cuda.is_available()

    def current_stream(self) -> Any:
        return torch.cuda.current_stream()

    def to_device(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        """Host → device copy, enqueued on the current stream."""
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, dtype=dtype)

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=self.device)


class TensorRT(Backend):
    name = "tensorrt"
    memory_from_device = True  # the engine's weights and the context's activations are TensorRT's own

    def __init__(self, device: str = "cuda", threads: int | None = None, cuda: CudaOps | None = None) -> None:
        super().__init__(device, threads)
        self.ops = cuda or CudaOps()
        self.engine: Any = None
        self.context: Any = None
        self._io: list[tuple[str, bool, Any]] = []  # (name, is_input, torch dtype)
        self._profiles: list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = []  # input_ids (min, opt, max)
        self._active_profile = 0
        self._version: str | None = None

    def available(self, dtype: Dtype = "fp32") -> tuple[bool, str]:
        if not self.ops.available():
            return False, "TensorRT needs a CUDA device; none here"
        try:
            import tensorrt
        except ImportError:
            return False, ("the tensorrt Python package is not installed (pip install 'tlc-export[tensorrt-cu12]', or -cu13: "
                           "torch.version.cuda's major, on a CUDA machine)")
        if dtype != "fp32":
            return False, "an engine fixes its own precision; run it as dtype fp32"
        self._version = getattr(tensorrt, "__version__", None)
        return True, ""

    def load(self, source: str | Path | Any, dtype: Dtype = "fp32") -> None:
        self.check(dtype)
        import tensorrt as trt

        path = Path(source)
        if not path.is_file():
            raise StageError(f"{path}: TensorRT engine not found; build it in the export stage")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise StageError(
                f"{path}: TensorRT {self._version} could not deserialize the engine (built by another TensorRT "
                "version or for another GPU?); rebuild it on this machine"
            )
        self.context = self.engine.create_execution_context()
        self._io = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_in = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            np_t = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            torch_t = torch.from_numpy(np.zeros(1, dtype=np_t)).dtype
            self._io.append((name, is_in, torch_t))
        first_input = next(n for n, is_in, _ in self._io if is_in)
        self._profiles = [
            tuple(tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(first_input, p))  # type: ignore[misc]
            for p in range(int(getattr(self.engine, "num_optimization_profiles", 1)))
        ]
        self._active_profile = 0

    def _profile_for(self, shape: tuple[int, ...]) -> int:
        """The profile made for this batch (opt batch equal), else any whose range holds the shape."""
        fits = [i for i, (lo, _opt, hi) in enumerate(self._profiles)
                if all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True))]
        if not fits:
            ranges = ", ".join(f"{lo}..{hi}" for lo, _o, hi in self._profiles)
            raise StageError(
                f"input shape {shape} is outside every optimization profile of the engine ({ranges}); rebuild it "
                "with export.trt_opt_batches / trt_max_batch / trt_max_seq_len covering the benchmarked shapes"
            )
        exact = [i for i in fits if self._profiles[i][1][0] == shape[0]]
        return (exact or fits)[0]

    def prepare(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any:
        given = {"input_ids": input_ids, "attention_mask": attention_mask}
        stream = self.ops.current_stream()
        if self._profiles:
            want = self._profile_for(tuple(input_ids.shape))
            if want != self._active_profile:
                if not self.context.set_optimization_profile_async(want, stream.cuda_stream):
                    raise StageError(f"TensorRT refused to switch to optimization profile {want}")
                self._active_profile = want
        buffers: dict[str, torch.Tensor] = {}
        for name, is_in, tt in self._io:
            if not is_in:
                continue
            if name not in given:
                raise StageError(f"engine input `{name}` is not one the benchmark provides (input_ids, attention_mask)")
            t = self.ops.to_device(given[name], tt)
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
            buffers[name] = self.ops.empty(shape, tt)
            out_name = out_name or name
        for name, t in buffers.items():
            self.context.set_tensor_address(name, int(t.data_ptr()))
        return buffers, out_name

    def forward(self, prepared: Any) -> Any:
        buffers, out_name = prepared
        # torch's current stream: after the input copies, inside the harness's CUDA events.
        if not self.context.execute_async_v3(self.ops.current_stream().cuda_stream):
            raise StageError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        return buffers[out_name]

    def sync(self) -> None:
        self.ops.current_stream().synchronize()

    def to_numpy(self, out: Any) -> np.ndarray:
        self.sync()
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.context = None
        self.engine = None

    def runtime_memory_bytes(self) -> int | None:
        """Activation memory of the execution context, allocated outside torch when the context is created at
        load (so inside `model_mem_bytes`; the harness does not add it to the peak again)."""
        if self.engine is None:
            return None
        for attr in ("device_memory_size_v2", "device_memory_size"):  # 11.x has only the first
            if hasattr(self.engine, attr):
                return int(getattr(self.engine, attr))
        return None

    def describe(self) -> dict[str, Any]:
        return {"device": "cuda", "runtime_version": f"tensorrt {self._version}",
                "trt_profiles": len(self._profiles) or None}
