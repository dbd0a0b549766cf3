"""ONNX Runtime: CPUExecutionProvider, or the CUDA / TensorRT providers where installed.

On a GPU provider the session is timed like torch and TensorRT: inputs are copied to the device once
(`prepare`, IO binding with device-resident OrtValues), the logits stay on the device (bound output),
and the provider runs on torch's current CUDA stream (`user_compute_stream`), so the harness's CUDA
events bracket its kernels and no host copy is on the clock. Its memory is read from the device
(`cudaMemGetInfo` deltas), since ONNX Runtime's arena is not torch's allocator.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from runtime_bench.backends.base import Backend, Dtype
from tlc_export.errors import StageError
from tlc_export.export.session import cpu_session

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

_NP_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


class OnnxRuntime(Backend):
    """One InferenceSession per file, fixed intra-op threads so runs are comparable."""

    name = "onnxruntime"
    memory_from_device = True  # ORT's CUDA arena is outside torch's allocator

    def __init__(self, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(device, threads)
        self.provider = device.split(":")[0] if device.split(":")[0] in PROVIDERS else "cpu"
        self.session: Any = None
        self._inputs: list[tuple[str, Any]] = []

    @property
    def cuda(self) -> bool:
        return self.provider in ("cuda", "tensorrt")

    def available(self, dtype: Dtype = "fp32") -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, "onnxruntime is not installed (pip install 'tlc-export[cpu]', or [ort-cu12] / [ort-cu13] on a GPU)"
        if dtype != "fp32":
            return False, "the ONNX file fixes its own precision; run it as dtype fp32"
        want = PROVIDERS[self.provider]
        if want not in ort.get_available_providers():
            return False, f"{want} is not in onnxruntime.get_available_providers() ({', '.join(ort.get_available_providers())})"
        if self.cuda and self._torch_stream() is None:
            return False, f"{want} is timed with CUDA events on torch's stream; torch sees no CUDA device here"
        return True, ""

    def load(self, source: str | Path | Any, dtype: Dtype = "fp32") -> None:
        self.check(dtype)
        import onnxruntime as ort

        path = Path(source)
        if not path.is_file():
            raise StageError(f"{path}: ONNX file not found; run the export stage or give an existing .onnx path")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # keep provider chatter out of the benchmark table
        providers: list[Any] = [(PROVIDERS[self.provider], self._provider_options(path))]
        if self.provider == "tensorrt":
            providers.append(("CUDAExecutionProvider", self._provider_options(path, "cuda")))  # nodes TRT cannot take
        if self.provider != "cpu":
            providers.append("CPUExecutionProvider")  # ops a GPU provider lacks fall back here
        if self.provider == "cpu":
            self.session = cpu_session(path, so)  # without ORT's load-time SkipLayerNormalization fusion (slower on CPU)
        else:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        got = self.session.get_providers()
        if PROVIDERS[self.provider] not in got:
            raise StageError(f"{path}: ONNX Runtime did not enable {PROVIDERS[self.provider]} (session providers: {got})")
        self._inputs = [(i.name, _NP_TYPES.get(i.type, np.int64)) for i in self.session.get_inputs()]
        names = [n for n, _ in self._inputs]
        if "input_ids" not in names:
            raise StageError(f"{path}: model inputs are {names}; expected `input_ids` (and `attention_mask`)")

    def _provider_options(self, path: Path, provider: str | None = None) -> dict[str, str]:
        provider = provider or self.provider
        if provider == "cpu":
            return {}
        opts = {"device_id": str(self._device_index())}
        stream = self._torch_stream()
        if stream is not None:
            opts["user_compute_stream"] = str(stream)  # torch's current stream: the harness's events see the work
        if provider == "tensorrt":
            # Engines ORT's TensorRT provider builds are cached per file (a rebuild costs minutes), outside the run
            # directory: they are this machine's, not the run's.
            key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
            cache = Path(tempfile.gettempdir()) / "tlc-ort-tensorrt" / f"{path.stem}-{key}"
            cache.mkdir(parents=True, exist_ok=True)
            opts.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(cache), trt_timing_cache_enable="True",
                        trt_timing_cache_path=str(cache))
        return opts

    def _device_index(self) -> int:
        _, _, idx = self.device.partition(":")
        return int(idx) if idx.isdigit() else 0

    @staticmethod
    def _torch_stream() -> int | None:
        try:
            import torch

            return int(torch.cuda.current_stream().cuda_stream) if torch.cuda.is_available() else None
        except Exception:  # noqa: BLE001 - no torch CUDA: ORT keeps its own stream and syncs each run
            return None

    def prepare(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any:
        given = {"input_ids": input_ids, "attention_mask": attention_mask}
        feed = {}
        for name, typ in self._inputs:
            if name not in given:
                raise StageError(f"ONNX input `{name}` is not one the benchmark provides (input_ids, attention_mask)")
            feed[name] = np.ascontiguousarray(given[name], dtype=typ)
        if not self.cuda:
            return feed
        import onnxruntime as ort

        # Device-resident inputs (copied once, here, not in the timed calls) and a device-resident output.
        binding = self.session.io_binding()
        values = {n: ort.OrtValue.ortvalue_from_numpy(a, "cuda", self._device_index()) for n, a in feed.items()}
        for n, v in values.items():
            binding.bind_ortvalue_input(n, v)
        binding.bind_output(self.session.get_outputs()[0].name, "cuda", self._device_index())
        return binding, values  # the OrtValues must outlive the binding

    def forward(self, prepared: Any) -> Any:
        if not self.cuda:
            return self.session.run(None, prepared)[0]
        binding, _ = prepared
        self.session.run_with_iobinding(binding)
        return binding

    def to_numpy(self, out: Any) -> np.ndarray:
        if self.cuda:
            self.sync()
            return np.asarray(out.copy_outputs_to_cpu()[0], dtype=np.float32)
        return np.asarray(out, dtype=np.float32)

    def sync(self) -> None:
        if self.cuda and self._torch_stream() is not None:
            import torch

            torch.cuda.current_stream().synchronize()

    def close(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        out = {"device": self.provider, "provider": PROVIDERS[self.provider], "runtime_version": f"onnxruntime {ort.__version__}"}
        if self.cuda:
            out["io_binding"] = "device inputs and output"
        return out
