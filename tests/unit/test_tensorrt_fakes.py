"""TensorRT paths with fakes: nothing here can run TensorRT or CUDA, so the fakes record what the code
asks of them (streams, profiles, network flags) and the tests check the order and the arguments."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime_bench.backends.tensorrt_backend import TensorRT
from runtime_bench.peaks import gpu_peak
from tlc_export.export.tensorrt import build_engine, profile_shapes


class FakeStream:
    def __init__(self, handle: int, log: list) -> None:
        self.cuda_stream, self.log = handle, log

    def synchronize(self) -> None:
        self.log.append(("sync", self.cuda_stream))


class FakeCuda:
    """CudaOps on the CPU: tensors stay on the host, every enqueued operation is logged with its stream."""

    device = "cpu"

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.stream = FakeStream(7, self.log)

    def available(self) -> bool:
        return True

    def current_stream(self) -> FakeStream:
        return self.stream

    def to_device(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        self.log.append(("copy", self.stream.cuda_stream))
        return torch.from_numpy(np.ascontiguousarray(array)).to(dtype=dtype)

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype)


def _fake_trt(log: list, profiles: list, memory_attr: str) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "11.4.0"

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class Context:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_optimization_profile_async(self, index: int, stream: int) -> bool:
            log.append(("profile", index, stream))
            return True

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            return (self.shapes["input_ids"][0], 2)

        def set_tensor_address(self, name: str, ptr: int) -> None:
            pass

        def execute_async_v3(self, stream: int) -> bool:
            log.append(("execute", stream))
            return True

    class Engine:
        num_io_tensors = 3
        num_optimization_profiles = len(profiles)
        names = ["input_ids", "attention_mask", "logits"]

        def __init__(self) -> None:
            setattr(self, memory_attr, 12345)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> str:
            return TensorIOMode.OUTPUT if name == "logits" else TensorIOMode.INPUT

        def get_tensor_dtype(self, name: str) -> str:
            return "f32" if name == "logits" else "i64"

        def get_tensor_profile_shape(self, name: str, index: int) -> list:
            return profiles[index]

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> Engine:
            return Engine()

    trt.TensorIOMode, trt.Logger, trt.Runtime = TensorIOMode, Logger, Runtime
    trt.nptype = lambda t: np.float32 if t == "f32" else np.int64
    return trt


@pytest.mark.parametrize("memory_attr", ["device_memory_size_v2", "device_memory_size"])
def test_engine_runs_on_the_stream_of_its_copies_and_the_timing_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_attr: str
) -> None:
    profiles = [[(1, 1), (1, 16), (1, 16)], [(2, 1), (4, 16), (4, 16)]]  # as profile_shapes([1, 4], 4, 16)
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(cuda.log, profiles, memory_attr))
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    b = TensorRT(cuda=cuda)
    b.load(engine)
    assert b.runtime_memory_bytes() == 12345  # TensorRT 10.x and 11.x attribute names
    assert b.describe()["runtime_version"] == "tensorrt 11.4.0"

    ids = np.full((4, 16), 7)
    prepared = b.prepare(ids, np.ones_like(ids))  # batch 4: its own profile
    b.forward(prepared)
    cuda.stream = FakeStream(9, cuda.log)  # the harness may time on another current stream: the engine follows
    p1 = b.prepare(ids[:1], np.ones_like(ids[:1]))
    b.forward(p1)
    b.sync()
    assert cuda.log == [
        ("profile", 1, 7), ("copy", 7), ("copy", 7), ("execute", 7),
        ("profile", 0, 9), ("copy", 9), ("copy", 9), ("execute", 9), ("sync", 9),
    ]


def test_a_shape_outside_every_profile_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(cuda.log, [[(1, 1), (1, 16), (1, 16)]], "device_memory_size_v2"))
    (tmp_path / "m.engine").write_bytes(b"plan")
    b = TensorRT(cuda=cuda)
    b.load(tmp_path / "m.engine")
    with pytest.raises(Exception, match="outside every optimization profile"):
        b.prepare(np.ones((8, 16), dtype=np.int64), np.ones((8, 16), dtype=np.int64))


def test_profiles_cover_every_batch_with_opt_at_each_benchmarked_one() -> None:
    assert profile_shapes([32, 1], 32, 128) == [
        {"min": (1, 1), "opt": (1, 128), "max": (1, 128)},
        {"min": (2, 1), "opt": (32, 128), "max": (32, 128)},
    ]
    assert profile_shapes([1, 8], 64, 16)[-1] == {"min": (2, 1), "opt": (8, 16), "max": (64, 16)}


def _fake_builder_trt(has_flag: bool, calls: list, accept_cache: tuple[bool, ...] = (True,)) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0" if has_flag else "11.4.0"

    class Flag:
        pass

    if has_flag:
        Flag.STRONGLY_TYPED = 1
    trt.NetworkDefinitionCreationFlag = Flag

    class ILogger:
        def __init__(self) -> None:
            pass

    class Input:
        def __init__(self, name: str) -> None:
            self.name = name

    class Network:
        num_inputs = 2

        def get_input(self, i: int) -> Input:
            return Input(["input_ids", "attention_mask"][i])

    class Profile:
        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            calls.append(("shape", name, lo, opt, hi))

    class Config:
        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            pass

        def add_optimization_profile(self, p: Profile) -> None:
            calls.append(("profile",))

        def set_flag(self, flag: object) -> None:  # a precision flag would be a bug: 11.x has none
            raise AssertionError("no builder precision flag may be set")

        def create_timing_cache(self, blob: bytes) -> bytes:
            calls.append(("cache", blob))
            return blob

        def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
            answers = [c for c in calls if c[0] == "set_cache"]
            calls.append(("set_cache", cache))
            return accept_cache[min(len(answers), len(accept_cache) - 1)]

        def get_timing_cache(self) -> types.SimpleNamespace:
            return types.SimpleNamespace(serialize=lambda: b"tuned")

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            calls.append(("network", flags))
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            return b"engine-bytes"

    class Parser:
        num_errors = 0

        def __init__(self, network: Network, logger: ILogger) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            return True

    trt.ILogger, trt.Builder, trt.OnnxParser = ILogger, Builder, Parser
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    return trt


@pytest.mark.parametrize("has_flag", [True, False])
def test_build_engine_is_strongly_typed_on_10_and_11(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_flag: bool) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"])], "g",
                          [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                          [helper.make_tensor_value_info("logits", TensorProto.INT64, ["b", "s"])])
    onnx.save(helper.make_model(g), tmp_path / "m.onnx")
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_builder_trt(has_flag, calls))
    info = build_engine(tmp_path / "m.onnx", "fp16", profile_shapes([1, 32], 32, 128), tmp_path / "m.engine")
    assert calls[0] == ("network", 1 << 1 if has_flag else 0)
    assert calls.count(("profile",)) == 2
    assert ("shape", "input_ids", (1, 1), (1, 128), (1, 128)) in calls
    assert ("shape", "attention_mask", (2, 1), (32, 128), (32, 128)) in calls
    assert (tmp_path / "m.engine").read_bytes() == b"engine-bytes"
    assert info["tensorrt_version"] == ("10.13.0" if has_flag else "11.4.0") and len(info["profiles"]) == 2


def _identity_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"])], "g",
                          [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                          [helper.make_tensor_value_info("logits", TensorProto.INT64, ["b", "s"])])
    onnx.save(helper.make_model(g), path)
    return path


@pytest.mark.parametrize("accept, status", [((True,), "loaded"), ((False, True), "rejected, replaced")])
def test_timing_cache_rejection_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accept: tuple,
                                           status: str) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_builder_trt(True, calls, accept))
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"stale")
    info = build_engine(_identity_onnx(tmp_path / "m.onnx"), "fp16", profile_shapes([1], 1, 8), tmp_path / "m.engine",
                        timing_cache=cache)
    assert info["timing_cache"] == status
    sets = [c[1] for c in calls if c[0] == "set_cache"]
    assert sets == ([b"stale"] if accept == (True,) else [b"stale", b""])  # a rejected cache is replaced by an empty one
    assert cache.read_bytes() == b"tuned"
    if accept[0] is False:
        assert "rejected this timing cache" in (tmp_path / "m.engine.log").read_text()


def test_timing_cache_rejected_twice_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tlc_export.errors import StageError

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_builder_trt(True, [], (False,)))
    with pytest.raises(StageError, match="rejected even an empty timing cache"):
        build_engine(_identity_onnx(tmp_path / "m.onnx"), "fp16", profile_shapes([1], 1, 8), tmp_path / "m.engine",
                     timing_cache=tmp_path / "trt.cache")


def test_parse_only_reports_parser_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tlc_export.export.tensorrt import parse_onnx

    trt = _fake_builder_trt(True, [])

    class Rejecting(trt.OnnxParser):
        num_errors = 1

        def parse_from_file(self, path: str) -> bool:
            return False

        def get_error(self, i: int) -> str:
            return "INT4 blocks along N are not supported"

    trt.OnnxParser = Rejecting
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    out = parse_onnx(_identity_onnx(tmp_path / "m.onnx"))
    assert out["ok"] is False and out["errors"] == ["INT4 blocks along N are not supported"]
    assert out["inputs"] == 2


@pytest.mark.parametrize("name,tflops", [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
    ("NVIDIA H200", 989), ("NVIDIA H200 NVL", 835), ("NVIDIA GH200 480GB", 989), ("NVIDIA A100-SXM4-80GB", 312),
])
def test_gpu_peak_by_exact_model(name: str, tflops: float) -> None:
    peak, note = gpu_peak(name)
    assert peak == tflops * 1e12 and name in note


def test_unknown_gpu_has_no_made_up_peak() -> None:
    peak, note = gpu_peak("NVIDIA Quantum Q1")
    assert np.isnan(peak) and "--peak-tflops" in note
