"""`tlc package`: one chosen variant of a run as a self-contained serving bundle.

`select.choose` picks the (variant, format) — named, or the report's answer for a storage or
latency budget — and `bundle.write_bundle` writes the folder (ONNX model, HF config and tokenizer,
provenance, README, Triton model repository) atomically. That is classification's; the run's task
family (`run_family`, `TaskFamily.choose_bundle / write_bundle`) picks the packager, and translation's is
`translation_select` + `translation_bundle` (encoder.onnx + decoder.onnx, tokenizer, tlc.json, README).
"""

from __future__ import annotations

from tlc_export.package.bundle import write_bundle
from tlc_export.package.gpu import EngineGpuMismatch
from tlc_export.package.select import Choice, PackageError, check_run, choose, run_family

__all__ = ["Choice", "EngineGpuMismatch", "PackageError", "check_run", "choose", "run_family", "write_bundle"]
