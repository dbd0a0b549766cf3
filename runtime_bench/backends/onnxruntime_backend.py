"""ONNX Runtime: CPUExecutionProvider, or the CUDA / TensorRT providers where installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime_bench.backends.base import Backend, Dtype
from tlc_export.errors import StageError

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

_NP_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


class OnnxRuntime(Backend):
    """One InferenceSession per file, fixed intra-op threads so runs are comparable."""

    name = "onnxruntime"

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
            return False, "onnxruntime is not installed (pip install onnxruntime)"
        if dtype != "fp32":
            return False, "the ONNX file fixes its own precision; run it as dtype fp32"
        want = PROVIDERS[self.provider]
        if want not in ort.get_available_providers():
            return False, f"{want} is not in onnxruntime.get_available_providers() ({', '.join(ort.get_available_providers())})"
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
        providers = [PROVIDERS[self.provider]]
        if self.provider != "cpu":
            providers.append("CPUExecutionProvider")  # ops a GPU provider lacks fall back here
        self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        self._inputs = [(i.name, _NP_TYPES.get(i.type, np.int64)) for i in self.session.get_inputs()]
        names = [n for n, _ in self._inputs]
        if "input_ids" not in names:
            raise StageError(f"{path}: model inputs are {names}; expected `input_ids` (and `attention_mask`)")

    def prepare(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any:
        given = {"input_ids": input_ids, "attention_mask": attention_mask}
        feed = {}
        for name, typ in self._inputs:
            if name not in given:
                raise StageError(f"ONNX input `{name}` is not one the benchmark provides (input_ids, attention_mask)")
            feed[name] = np.ascontiguousarray(given[name], dtype=typ)
        return feed

    def forward(self, prepared: Any) -> Any:
        return self.session.run(None, prepared)[0]

    def to_numpy(self, out: Any) -> np.ndarray:
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"device": self.provider, "provider": PROVIDERS[self.provider], "runtime_version": f"onnxruntime {ort.__version__}"}
