"""A TensorRT engine runs only on the GPU model (compute capability) and TensorRT version that built it.

The export stage records both with each engine (`gpu`, `tensorrt_version` in its row); `tlc package`
compares the recorded GPU with the one here and refuses a mismatch unless forced.
"""

from __future__ import annotations

from typing import Any

from tlc_export.errors import TlcError
from tlc_export.export.tensorrt import current_gpu


class EngineGpuMismatch(TlcError):
    """An engine would be packaged for a GPU it was not built on."""


def check_engine_gpu(row: dict[str, Any], allow_other_gpu: bool, here: dict[str, str] | None = None) -> dict[str, Any]:
    """The `tensorrt` section of tlc.json; raises EngineGpuMismatch unless the engine's GPU is the one here
    (same name and compute capability) or `allow_other_gpu`."""
    built = row.get("gpu")
    here = current_gpu() if here is None else here
    info = {"engine": row.get("path"), "onnx_source": row.get("onnx_path"), "tensorrt_version": row.get("tensorrt_version"),
            "built_on_gpu": built, "packaged_on_gpu": here, "profiles": row.get("trt_profiles")}
    if not built:
        problem = "the export row does not record the GPU the engine was built on (rerun `tlc export` on the GPU)"
    elif not here:
        problem = f"no NVIDIA GPU is visible here to compare with the engine's {built.get('name')} (sm {built.get('compute_capability')})"
    elif (built.get("name"), built.get("compute_capability")) != (here.get("name"), here.get("compute_capability")):
        problem = (f"the engine was built on {built.get('name')} (sm {built.get('compute_capability')}) but this machine has "
                   f"{here.get('name')} (sm {here.get('compute_capability')})")
    else:
        return {**info, "gpu_check": "same GPU"}
    if not allow_other_gpu:
        raise EngineGpuMismatch(f"{problem}; a TensorRT plan only runs on the GPU and TensorRT version that built it. "
                                "Rebuild it on the serving GPU (`tlc export RUN_DIR --force` there), package an ONNX "
                                "format instead (--format onnx-…), or pass --allow-other-gpu to package it anyway")
    return {**info, "gpu_check": f"forced (--allow-other-gpu): {problem}"}
