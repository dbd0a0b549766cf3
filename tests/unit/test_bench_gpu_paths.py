"""GPU paths of the bench with fakes (no CUDA here): ONNX Runtime on a GPU provider with IO binding and
torch's stream, memory of runtimes with their own allocator from the driver (nothing counted twice),
torch.compile with static shapes."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_bench_runtime import SIZE, _fake_run, work  # noqa: F401 - its `work` fixture

from runtime_bench import harness, metrics
from runtime_bench.backends.base import Backend


class FakeOrtValue:
    def __init__(self, array: np.ndarray, device: str) -> None:
        self.array, self.device = array, device

    @classmethod
    def ortvalue_from_numpy(cls, array: np.ndarray, device: str, index: int) -> FakeOrtValue:
        return cls(array, device)


def _fake_ort(log: list) -> types.ModuleType:
    ort = types.ModuleType("onnxruntime")
    ort.__version__ = "1.31.1"
    ort.OrtValue = FakeOrtValue
    ort.get_available_providers = lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    ort.GraphOptimizationLevel = types.SimpleNamespace(ORT_ENABLE_ALL=99)

    class SessionOptions:
        pass

    class Binding:
        def __init__(self) -> None:
            self.inputs: dict[str, FakeOrtValue] = {}
            self.outputs: list[tuple] = []

        def bind_ortvalue_input(self, name: str, value: FakeOrtValue) -> None:
            self.inputs[name] = value

        def bind_output(self, name: str, device: str, index: int) -> None:
            self.outputs.append((name, device))

        def copy_outputs_to_cpu(self) -> list[np.ndarray]:
            log.append(("copy_out",))
            return [self.inputs["input_ids"].array[:, :2].astype(np.float32)]

    class InferenceSession:
        def __init__(self, path: str, sess_options: Any, providers: list, disabled_optimizers: Any = None) -> None:
            log.append(("providers", providers))
            if disabled_optimizers is not None:
                log.append(("disabled_optimizers", disabled_optimizers))
            self.providers = [p[0] if isinstance(p, tuple) else p for p in providers]

        def get_providers(self) -> list[str]:
            return self.providers

        def get_inputs(self) -> list:
            return [types.SimpleNamespace(name="input_ids", type="tensor(int64)"),
                    types.SimpleNamespace(name="attention_mask", type="tensor(int64)")]

        def get_outputs(self) -> list:
            return [types.SimpleNamespace(name="logits")]

        def io_binding(self) -> Binding:
            return Binding()

        def run_with_iobinding(self, binding: Binding) -> None:
            log.append(("run_iobinding", sorted(v.device for v in binding.inputs.values()), binding.outputs))

        def run(self, names: Any, feed: dict) -> list:
            log.append(("run_host",))
            return [feed["input_ids"][:, :2].astype(np.float32)]

    ort.SessionOptions, ort.InferenceSession = SessionOptions, InferenceSession
    return ort


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_onnxruntime_gpu_provider_uses_device_io_binding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          provider: str) -> None:
    from runtime_bench.backends.onnxruntime_backend import OnnxRuntime

    log: list = []
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort(log))
    monkeypatch.setattr(OnnxRuntime, "_torch_stream", staticmethod(lambda: 4242))
    monkeypatch.setattr(OnnxRuntime, "sync", lambda self: log.append(("sync",)))
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    b = OnnxRuntime(device=provider)
    b.load(tmp_path / "m.onnx")
    (_, providers), = log  # and no disabled_optimizers: SkipLayerNormFusion stays on for GPU providers
    first, *rest = providers
    assert first[0] == ("CUDAExecutionProvider" if provider == "cuda" else "TensorrtExecutionProvider")
    assert first[1]["user_compute_stream"] == "4242"  # torch's stream: the harness's CUDA events see the work
    if provider == "tensorrt":
        assert first[1]["trt_engine_cache_enable"] == "True" and rest[0][0] == "CUDAExecutionProvider"
    assert rest[-1] == "CPUExecutionProvider"
    ids = np.arange(12).reshape(2, 6)
    prepared = b.prepare(ids, np.ones_like(ids))
    log.clear()
    out = b.forward(prepared)
    assert log == [("run_iobinding", ["cuda", "cuda"], [("logits", "cuda")])]  # nothing crosses to the host
    assert b.to_numpy(out).shape == (2, 2) and log[1:] == [("sync",), ("copy_out",)]
    assert b.describe()["io_binding"] == "device inputs and output" and b.memory_from_device


def test_onnxruntime_cpu_keeps_host_feeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime_bench.backends.onnxruntime_backend import OnnxRuntime

    log: list = []
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort(log))
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    b = OnnxRuntime(device="cpu")
    b.load(tmp_path / "m.onnx")
    # CPU only: ORT's load-time SkipLayerNormalization fusion left out (tests/unit/test_export_optimize.py checks the name)
    assert log == [("providers", ["CPUExecutionProvider"]), ("disabled_optimizers", ["SkipLayerNormFusion"])]
    ids = np.arange(12).reshape(2, 6)
    assert b.run(ids, np.ones_like(ids)).shape == (2, 2) and log[-1] == ("run_host",)


class DeviceRuntime(Backend):
    """A runtime with its own allocator on a fake device: loading takes WEIGHTS + RESERVED (a context's
    activations, reported by runtime_memory_bytes), the first run grows its arena by ARENA."""

    name = "fake-device"
    memory_from_device = True
    WEIGHTS, RESERVED, ARENA = 1000, 300, 50
    used = 10_000

    def __init__(self, device: str = "cuda", threads: int | None = None) -> None:
        super().__init__(device, threads)
        self.grown = False

    def available(self, dtype: str = "fp32") -> tuple[bool, str]:
        return True, ""

    def load(self, source: Any, dtype: str = "fp32") -> None:
        DeviceRuntime.used += self.WEIGHTS + self.RESERVED

    def forward(self, prepared: Any) -> Any:
        if not self.grown:
            DeviceRuntime.used += self.ARENA
            self.grown = True
        return np.zeros((len(prepared[0]), 2), np.float32)

    def to_numpy(self, out: Any) -> np.ndarray:
        return out

    def runtime_memory_bytes(self) -> int | None:
        return self.RESERVED


def test_runtime_memory_from_the_device_is_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    used = lambda: DeviceRuntime.used  # noqa: E731
    monkeypatch.setattr(harness, "device_used_bytes", used)
    monkeypatch.setattr(metrics, "device_used_bytes", used)
    monkeypatch.setattr(metrics, "_cuda_sync", lambda: None)
    monkeypatch.setattr(harness, "time_calls", lambda fn, sync, warmup, runs, cuda: [fn() is not None and 1.0] * runs)
    monkeypatch.setattr(harness, "get_backend", lambda name, device=None, threads=None: DeviceRuntime())

    class NoTorchPeak:  # torch's allocator must not be asked about a runtime with its own allocator
        def __init__(self, *a: Any, **kw: Any) -> None:
            raise AssertionError("PeakMemory used for a device-memory runtime")

    monkeypatch.setattr(harness, "PeakMemory", NoTorchPeak)
    rows = harness.bench_variant(harness.Variant("v", "file"), ["fake-device"], ["fp32"],
                                 harness.BenchSettings(batches=[1, 4], seq_len=8, warmup=1, runs=3))
    assert [r["status"] for r in rows] == ["ok", "ok"], rows[0]["reason"]
    first, second = rows
    assert first["model_mem_bytes"] == DeviceRuntime.WEIGHTS + DeviceRuntime.RESERVED
    assert first["runtime_reserved_bytes"] == DeviceRuntime.RESERVED  # reported, inside model_mem_bytes
    assert first["peak_mem_bytes"] == DeviceRuntime.ARENA  # not RESERVED again
    assert second["peak_mem_bytes"] == 0  # the arena kept what it grew to


def test_torch_compile_is_static_shaped(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from runtime_bench.backends.torch_backend import TorchCompile

    seen: dict = {}
    monkeypatch.setattr(torch, "compile", lambda model, **kw: (seen.update(kw), model)[1])
    b = TorchCompile(device="cpu")
    b._transform(torch.nn.Linear(2, 2))
    assert seen["dynamic"] is False and b.describe()["compile_dynamic"] is False


def test_bench_stage_untimed_compile_rows_take_eager_accuracy_and_gpu_ort_rows_are_added(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, work: dict) -> None:  # noqa: F811 - the fixture
    """An untimed torch-compile row is never compiled: its accuracy is torch-eager's at the same dtype. ONNX
    Runtime's GPU providers get their own timed rows for the dense file (here the provider is claimed but
    missing, so the row says unavailable instead of silently timing the CPU)."""
    import json

    from runtime_bench.backends.torch_backend import TorchCompile
    from tlc_export.tasks.classification.stages import bench as bench_stage
    from tlc_export.tasks.classification.stages.bench import BenchStage

    loaded: list[str] = []
    real_load = TorchCompile.load

    def load(self, source, dtype="fp32"):  # noqa: ANN001, ANN202
        loaded.append(Path(str(source)).stem)
        return real_load(self, source, dtype)

    monkeypatch.setattr(TorchCompile, "load", load)
    monkeypatch.setattr(TorchCompile, "_transform", lambda self, model: model)  # no inductor compile on CPU
    monkeypatch.setattr(bench_stage, "ort_gpu_providers", lambda cfg: ["cuda"])
    ctx = _fake_run(tmp_path, work)
    ctx.recipe.bench = ctx.recipe.bench.model_copy(update={"backends": ["torch-compile", "torch-eager", "onnxruntime"]})
    BenchStage().run(ctx)
    rows = [json.loads(line) for line in (ctx.out_dir / "results.jsonl").read_text().splitlines()]
    by = {(r["variant"], r["backend"], r["device"]): r for r in rows}
    sparse, dense = f"{SIZE}.s50.b4", f"{SIZE}.s00.b32"
    assert loaded == [dense]  # the timed (dense) variant only: the sparse one is never compiled
    compiled = by[(sparse, "torch-compile", "cpu")]
    eager = by[(sparse, "torch-eager", "cpu")]
    assert compiled["status"] == "ok" and compiled["batch"] is None
    assert compiled["dev_accuracy"] == eager["dev_accuracy"] and compiled["test_accuracy"] == eager["test_accuracy"]
    assert compiled["accuracy_source"].startswith("torch-eager fp32")
    ort_cpu = by[(dense, "onnxruntime", "cpu")]
    ort_gpu = [r for r in rows if r["backend"] == "onnxruntime" and r["device"] == "cuda"]
    assert ort_cpu["status"] == "ok" and len(ort_gpu) == 1
    assert ort_gpu[0]["status"] == "unavailable" and "CUDAExecutionProvider" in ort_gpu[0]["reason"]
