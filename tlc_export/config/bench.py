"""`bench` and `report` sections: runtime measurements and the final report."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from tlc_export.config.common import Section

BackendName = Literal["torch-eager", "torch-compile", "torch-int8", "torch-int4", "onnxruntime", "tensorrt"]


class BenchConfig(Section):
    """Latency, throughput, memory and accuracy of every variant on every backend."""

    backends: list[BackendName] = Field(
        default_factory=lambda: ["torch-eager", "torch-compile", "torch-int8", "torch-int4", "onnxruntime", "tensorrt"],
        description="Backends to measure; one that cannot run here yields rows marked unavailable.",
    )
    onnxruntime_providers: list[Literal["cpu", "cuda", "tensorrt"]] = Field(
        default_factory=lambda: ["cpu", "cuda", "tensorrt"],
        description="ONNX Runtime execution providers every timed ONNX file runs on: cpu always; cuda and tensorrt "
        "(ONNX Runtime's own TensorRT provider, which builds and caches its own engines) only where "
        "onnxruntime.get_available_providers() has them, with device-resident inputs and outputs (IO binding).",
    )
    dtypes: list[Literal["fp32", "fp16", "bf16"]] = Field(
        default_factory=lambda: ["fp32"], description="Torch backend dtypes (fp16/bf16 only on CUDA)."
    )
    batch_sizes: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)] = Field(
        default_factory=lambda: [1, 32], description="Batch sizes to time (each ≥ 1, at least one)."
    )
    seq_len: int = Field(default=128, ge=1, description="Sequence length of the timed inputs.")
    warmup: int = Field(default=3, ge=0, description="Untimed runs before timing.")
    runs: int = Field(default=10, ge=1, description="Timed runs per measurement.")
    threads: int | None = Field(default=None, ge=1, description="CPU threads (None = all cores); recorded in every row.")
    accuracy: bool = Field(default=True, description="Measure accuracy through each backend (whole splits, batched and padded).")
    accuracy_splits: list[Literal["dev", "test"]] = Field(
        default_factory=lambda: ["dev", "test"],
        description="Splits whose accuracy is measured through each backend; an accuracy an upstream stage already "
        "measured with the same computation (torch fp32 on CPU, ONNX Runtime CPU) is reused, not recomputed. The report "
        "chooses on dev and reports on test, so a row needs both to appear in its latency answers.",
    )
    eval_batch_size: int = Field(default=32, ge=1, description="Batch size of the accuracy passes.")
    latency_variants: Literal["all", "dense"] = Field(
        default="dense",
        description="Time every variant, or only dense ones: torch backends time sparsity 0 at 32 bits (fake-quant "
        "and unstructured zeros run the same dense kernels), ONNX/TensorRT files time sparsity 0 in every format. "
        "Accuracy is measured for all variants either way.",
    )


class ReportConfig(Section):
    """The final HTML + Markdown report."""

    storage_budgets_mb: list[float] | None = Field(
        default=None, description="Storage budgets (MB) for the answer table (None = chosen from the results)."
    )
    latency_budgets_ms: list[float] | None = Field(
        default=None, description="p50 latency budgets (ms) for the answer table (None = chosen from the results)."
    )
    noninferiority_margin_points: float = Field(
        default=1.0, ge=0.0, le=100.0,
        description="Accuracy (in points: 1.0 = one percentage point) that a faster or smaller variant may be shown "
        "to lose against the dev-best and still be the answer for a latency / storage budget (and what `tlc package "
        "--max-latency-ms/--max-storage-mb` ships): preferred when the one-sided 95 % lower bound of its dev accuracy "
        "minus the dev-best's, paired on the same dev examples (Tango's score bound, `stats.paired_lower_bound`), "
        "is above −margin. 0 keeps the dev-best. Classification (accuracy) only; a translation recipe's BLEU "
        "answers keep the dev-best.",
    )
    screenshot: bool = Field(default=False, description="Also render index.html to PNG with headless Chromium, if installed.")
