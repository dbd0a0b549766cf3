"""Build a serialized TensorRT engine from a Q/DQ ONNX file (TensorRT Python API, imported lazily).

Strongly typed network: TensorRT runs the precisions the ONNX file states (INT8 Q/DQ, INT4 weight
DQ, fp16 graph), instead of the weakly typed builder flags (deprecated in 10.12, removed in 11 with
the calibrators). Works with TensorRT 10.x (the STRONGLY_TYPED creation flag is set) and 11.x
(every network is strongly typed; the flag is ignored or absent): nothing here touches a
precision flag. A strongly typed INT8 engine built from an fp32 Q/DQ graph would run every
non-quantized layer in fp32/TF32, so `int8_fp16_qdq` turns ONNX Runtime's static Q/DQ file into
an fp16 graph with fp16 scales first.

Profiles: one optimization profile per benchmarked batch size (opt = that batch, full sequence),
because TensorRT tunes kernels for the opt shape; a single profile with opt = max would run
batch 1 on batch-32 kernels. A timing cache on disk makes rebuilds fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
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
            "or `pip install 'tlc-export[tensorrt-cu12]'` (or -cu13: the CUDA major of torch.version.cuda) on a "
            "machine with an NVIDIA GPU"
        ) from e
    return trt


def current_gpu() -> dict[str, str] | None:
    """{name, compute_capability} of GPU 0 here (nvidia-smi, else torch if installed), or None."""
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20, check=True).stdout.strip().splitlines()
            if out:
                name, _, cc = out[0].rpartition(",")
                return {"name": name.strip(), "compute_capability": cc.strip()}
        except (subprocess.SubprocessError, OSError):
            pass
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    except Exception:  # noqa: BLE001 - no torch or a broken CUDA: no GPU to report
        pass
    return None


def default_shapes(max_batch: int, max_seq: int) -> dict[str, Shape]:
    """One min/opt/max profile covering every shape, opt at the largest batch and sequence."""
    return {"min": (1, 1), "opt": (max_batch, max_seq), "max": (max_batch, max_seq)}


def profile_shapes(opt_batches: Sequence[int], max_batch: int, max_seq: int) -> list[dict[str, Shape]]:
    """One profile per batch in `opt_batches` (opt = (batch, max_seq)); together they cover 1..max_batch.

    Profile i takes the batches above the previous opt batch up to its own; the last one reaches
    `max_batch`. Sequences 1..max_seq everywhere.
    """
    batches = sorted({int(b) for b in opt_batches if 1 <= int(b) <= max_batch}) or [max_batch]
    out: list[dict[str, Shape]] = []
    lo = 1
    for i, b in enumerate(batches):
        hi = max_batch if i == len(batches) - 1 else b
        out.append({"min": (lo, 1), "opt": (b, max_seq), "max": (hi, max_seq)})
        lo = b + 1
    return out


def int8_fp16_qdq(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """ONNX Runtime's static INT8 Q/DQ file as an fp16 graph (opset 21: fp16 Q/DQ scales), int64 inputs
    and fp32 logits kept; the input of the strongly typed TensorRT INT8 engine."""
    import onnx

    from tlc_export.export.int4 import to_fp16, to_opset21

    model = to_fp16(to_opset21(onnx.load(str(src))))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst, suffix=".onnx") as tmp:
        onnx.save_model(model, str(tmp))
    return dst


def strongly_typed_flags(trt) -> int:  # noqa: ANN001 - the tensorrt module
    """`create_network` flags: STRONGLY_TYPED where the enum still has it (10.x; ignored by 11.x)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _logger(trt, lines: list[str]):  # noqa: ANN001, ANN202 - the tensorrt module; a trt.ILogger
    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:  # noqa: ANN001 - TensorRT's callback signature
            lines.append(f"[{severity}] {msg}")

    return _Logger()


def _parse(trt, onnx_path: Path, lines: list[str]):  # noqa: ANN001, ANN202
    """(builder, network, parser errors) for `onnx_path`, strongly typed."""
    logger = _logger(trt, lines)
    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    errors = [] if ok else [str(parser.get_error(i)) for i in range(parser.num_errors)] or ["parse_from_file returned False"]
    # The parser (and the logger) must outlive the network: TensorRT's Python docs keep them together.
    return builder, network, errors, (parser, logger)


def parse_onnx(onnx_path: str | os.PathLike[str]) -> dict[str, object]:
    """Parse-only pass (seconds, no build): does TensorRT's OnnxParser accept the file into a strongly typed
    network? Returns {ok, errors, layers, inputs, tensorrt_version}; raises BackendUnavailable without TensorRT."""
    trt = _import_tensorrt()
    lines: list[str] = []
    _, network, errors, _keep = _parse(trt, Path(onnx_path), lines)
    return {"ok": not errors, "errors": errors, "layers": getattr(network, "num_layers", None),
            "inputs": getattr(network, "num_inputs", None), "tensorrt_version": getattr(trt, "__version__", None)}


def _set_timing_cache(config, timing_cache: Path, lines: list[str]) -> tuple[object, str]:  # noqa: ANN001
    """Load the timing cache on disk into `config`; a cache TensorRT rejects (another GPU or TensorRT version:
    `set_timing_cache` returns False) is replaced by an empty one, and the rejection is logged."""
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    if config.set_timing_cache(cache, ignore_mismatch=False):
        return cache, "loaded" if timing_cache.is_file() else "new"
    lines.append(f"[tlc] {timing_cache}: TensorRT rejected this timing cache (another GPU or TensorRT version?); "
                 "building with an empty one, which replaces it")
    cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise StageError(f"{timing_cache}: TensorRT rejected even an empty timing cache")
    return cache, "rejected, replaced"


def build_engine(
    onnx_path: str | os.PathLike[str],
    precision: str,
    shapes: Mapping[str, Shape] | Sequence[Mapping[str, Shape]],
    out_path: str | os.PathLike[str],
    timing_cache: str | os.PathLike[str] | None = None,
    workspace_gib: float = 4.0,
) -> dict[str, object]:
    """Parse `onnx_path`, build a strongly typed engine with one profile per entry of `shapes`, write it
    atomically.

    `shapes`: one {"min"|"opt"|"max": (batch, sequence)} or a list of them (`profile_shapes`), applied
    to every input (`input_ids`, `attention_mask`). Writes `<out_path>.log` (parser errors, builder
    messages). Raises BackendUnavailable when TensorRT is missing, StageError when the ONNX breaks
    TensorRT's rules or the build fails. Returns the engine path, size, log, profiles and the
    TensorRT version (an engine only runs under the version that built it).
    """
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    violations = check_tensorrt_onnx(onnx_path, precision)  # type: ignore[arg-type]
    if violations:
        raise StageError(f"{onnx_path}: not buildable by TensorRT at {precision}: " + "; ".join(map(str, violations[:5])))
    trt = _import_tensorrt()
    lines: list[str] = []
    builder, network, errs, _keep = _parse(trt, onnx_path, lines)
    if errs:
        write_text(str(out_path) + ".log", "\n".join(lines + errs) + "\n")
        raise StageError(f"{onnx_path}: TensorRT OnnxParser failed: {'; '.join(errs[:3])}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profiles = [shapes] if isinstance(shapes, Mapping) else list(shapes)
    for shp in profiles:
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            name = network.get_input(i).name
            profile.set_shape(name, shp["min"], shp["opt"], shp["max"])
        config.add_optimization_profile(profile)
    cache, cache_status = None, None
    if timing_cache is not None:
        cache, cache_status = _set_timing_cache(config, Path(timing_cache), lines)
    engine = builder.build_serialized_network(network, config)
    write_text(str(out_path) + ".log", "\n".join(lines) + "\n")
    if engine is None:
        raise StageError(f"{onnx_path}: TensorRT build failed at {precision}; see {out_path}.log")
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(bytes(engine))
    if cache is not None and timing_cache is not None:
        write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return {"engine": str(out_path), "bytes": out_path.stat().st_size, "log": str(out_path) + ".log",
            "tensorrt_version": getattr(trt, "__version__", None), "gpu": current_gpu(),
            "profiles": [{k: list(v) for k, v in p.items()} for p in profiles], "timing_cache": cache_status}
