"""Build a serialized TensorRT engine from a Q/DQ ONNX file (TensorRT Python API, imported lazily).

Strongly typed network: TensorRT runs the precisions the ONNX file states (INT8 Q/DQ, INT4 weight
DQ, fp16 graph), instead of the deprecated weakly typed builder flags. Dynamic batch and sequence
come from one optimization profile. A timing cache on disk makes rebuilds fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from tlc_export.atomic import atomic_path, write_bytes, write_text
from tlc_export.errors import BackendUnavailable, StageError
from tlc_export.export.trt_rules import check_tensorrt_onnx

Shape = tuple[int, int]  # (batch, sequence)


def _import_tensorrt():
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or a broken CUDA install raising at import
        raise BackendUnavailable(
            f"TensorRT is not importable ({type(e).__name__}: {e}); use the docker/Dockerfile.tensorrt image "
            "or `pip install 'tlc-export[tensorrt]'` on a machine with an NVIDIA GPU"
        ) from e
    return trt


def default_shapes(max_batch: int, max_seq: int) -> dict[str, Shape]:
    """min/opt/max profile: opt at the largest batch and sequence (what the bench measures)."""
    return {"min": (1, 1), "opt": (max_batch, max_seq), "max": (max_batch, max_seq)}


def build_engine(
    onnx_path: str | os.PathLike[str],
    precision: str,
    shapes: Mapping[str, Shape],
    out_path: str | os.PathLike[str],
    timing_cache: str | os.PathLike[str] | None = None,
    workspace_gib: float = 4.0,
) -> dict[str, object]:
    """Parse `onnx_path`, build a strongly typed engine with one profile, write it atomically.

    `shapes`: {"min"|"opt"|"max": (batch, sequence)} applied to `input_ids` and `attention_mask`.
    Writes `<out_path>.log` (parser errors, builder messages). Raises BackendUnavailable when TensorRT
    is missing, StageError when the ONNX breaks TensorRT's rules or the build fails.
    """
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    violations = check_tensorrt_onnx(onnx_path, precision)  # type: ignore[arg-type]
    if violations:
        raise StageError(f"{onnx_path}: not buildable by TensorRT at {precision}: " + "; ".join(map(str, violations[:5])))
    trt = _import_tensorrt()
    lines: list[str] = []

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:  # noqa: ANN001 - TensorRT's callback signature
            lines.append(f"[{severity}] {msg}")

    logger = _Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        write_text(str(out_path) + ".log", "\n".join(lines + errs) + "\n")
        raise StageError(f"{onnx_path}: TensorRT OnnxParser failed: {'; '.join(errs[:3])}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        tc = Path(timing_cache)
        cache = config.create_timing_cache(tc.read_bytes() if tc.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    write_text(str(out_path) + ".log", "\n".join(lines) + "\n")
    if engine is None:
        raise StageError(f"{onnx_path}: TensorRT build failed at {precision}; see {out_path}.log")
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(bytes(engine))
    if cache is not None and timing_cache is not None:
        write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return {"engine": str(out_path), "bytes": out_path.stat().st_size, "log": str(out_path) + ".log"}
