"""`export` section: ONNX and TensorRT artifacts of the finetuned and compressed classifiers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tlc_export.config.common import Section

ExportFormat = Literal[
    "onnx-fp32",
    "onnx-fp16",
    "onnx-int8",
    "onnx-int8-dynamic",
    "onnx-int8-static",
    "onnx-int4",
    "onnx-int4-matmulnbits",
    "tensorrt-int8",
    "tensorrt-int4",
]


class ExportConfig(Section):
    """Which formats to write, for which compressed variants; every file is validated against PyTorch."""

    formats: list[ExportFormat] = Field(
        default_factory=lambda: ["onnx-fp32", "onnx-fp16", "onnx-int8", "onnx-int8-dynamic", "onnx-int8-static", "onnx-int4", "onnx-int4-matmulnbits", "tensorrt-int8", "tensorrt-int4"],
        description="Formats to export. onnx-int8 and onnx-int4 carry the compress stage's own codes; -dynamic/-static use ONNX Runtime's quantizers.",
    )
    sparsity: list[float] | None = Field(
        default=None,
        description="Pruned levels to export in addition to the dense model (None = every level the compress stage saved; [] = dense only).",
    )
    opset: int = Field(default=18, ge=17, le=23, description="Opset of the exported fp graph (INT4 files are converted to 21).")
    int4_block_size: int = Field(default=32, ge=16, description="Block length of onnx-int4-matmulnbits, ONNX Runtime's own INT4 quantizer (power of two ≥ 16). onnx-int4 and tensorrt-int4 carry the compress stage's codes on their own grids.")
    int8_attention_matmuls: bool = Field(
        default=False,
        description="onnx-int8-static and tensorrt-int8: also quantize attention's batched matmuls (Q·Kᵀ and softmax·V, "
        "both inputs activations, the softmax probabilities among them) on per-tensor INT8 grids. Off by default: an "
        "accuracy risk; either way every file is validated against PyTorch and its accuracy measured.",
    )
    calibration_samples: int = Field(default=128, ge=1, description="Train-split sentences used to calibrate onnx-int8-static.")
    validation_samples: int = Field(default=32, ge=1, description="Padded dev sentences used to compare every file against PyTorch.")
    accuracy_split: Literal["dev", "test"] = Field(
        default="dev",
        description="Split of the validation sentences and of the weight-only check (a file holding a variant's own codes "
        "must match PyTorch's accuracy there). Every file's own accuracy is measured on dev and test either way.",
    )
    trt_max_batch: int = Field(default=32, ge=1, description="TensorRT optimisation profiles: largest batch.")
    trt_opt_batches: list[int] = Field(
        default_factory=lambda: [1, 32],
        description="One TensorRT optimisation profile per batch size, tuned for it (opt = that batch); use the "
        "bench's batch_sizes. Together the profiles cover 1..trt_max_batch.",
    )
    trt_max_seq_len: int = Field(default=128, ge=1, description="TensorRT optimisation profile: longest sequence.")
    integer_kernels: bool = Field(
        default=True,
        description="onnx-int8 / onnx-int4 run the variant's own codes on ONNX Runtime's integer kernels "
        "(DynamicQuantizeMatMul + the rank-1 correction of the paper's offset; MatMulNBits with float zero points; "
        "GatherBlockQuantized tables) instead of dequantizing every weight on every call. false: the "
        "DequantizeLinear files (the exact fp32 function of the codes, slower).",
    )
    int4_kernel: Literal["matmulnbits-acc0", "matmulnbits-acc4", "int8-at-load"] = Field(
        default="int8-at-load",
        description="How onnx-int4 runs its 4-bit codes on CPU: MatMulNBits with float zero points at accuracy level 0 "
        "or 4 (fp32 compute: exact), or the 4-bit codes (stored two per byte) widened to int8 when ONNX Runtime loads the "
        "file, for DynamicQuantizeMatMul (activations quantized dynamically). runtime_bench.own_codes_speed times all three.",
    )
    optimize_cpu_graph: bool = Field(
        default=True,
        description="Fuse the ONNX Runtime CPU formats (onnx-fp32, onnx-int8, onnx-int4, and onnx-int8-dynamic, which is "
        "quantized from the fused fp32 graph): attention into com.microsoft.Attention, then ONNX Runtime's transformer "
        "optimizer (BiasGelu; not SkipLayerNormalization, slower on CPU than Add + LayerNormalization). Each fused "
        "file is validated like the unfused one and replaced by it, with the reason, when it fails. The unfused file stays beside it as <format>.unfused.onnx.",
    )
