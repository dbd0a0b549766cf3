"""`tlc package`: one chosen variant of a run as a self-contained serving bundle.

`select.choose` picks the (variant, format) — named, or the report's answer for a storage or
latency budget — and `bundle.write_bundle` writes the folder (ONNX model, HF config and tokenizer,
provenance, README, Triton model repository) atomically.
"""

from __future__ import annotations

from tlc_export.package.bundle import write_bundle
from tlc_export.package.gpu import EngineGpuMismatch
from tlc_export.package.select import Choice, PackageError, check_run, choose

__all__ = ["Choice", "EngineGpuMismatch", "PackageError", "check_run", "choose", "write_bundle"]
