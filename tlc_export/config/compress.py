"""`compress` section: the paper's uniform quantizer, iterative magnitude pruning, and their grid."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from tlc_export.config.common import Section


class QuantizeConfig(Section):
    """Uniform k-bit weight quantization. Defaults are the paper's (§4.2): per-tensor [min, max] range."""

    bits: list[int] = Field(default_factory=lambda: [8, 6, 4], description="Bit widths to try (2–8); 32 (no quantization) is always the baseline.")
    granularity: Literal["per-tensor", "per-channel", "block"] = Field(
        default="per-tensor", description="One range per tensor (paper), per output row, or per block of `group_size` along the input dimension."
    )
    group_size: int = Field(default=32, ge=2, description="Block length for granularity=block.")
    symmetric: bool = Field(
        default=False,
        description="False: the paper's [min, max] grid with unsigned codes. True: zero-centred signed codes, zero point 0 (TensorRT's form).",
    )
    zero_point: Literal["integer", "paper"] = Field(
        default="integer",
        description="Asymmetric grids only (a symmetric grid's zero point is 0). integer (default): wherever a tensor's "
        "range holds 0 (every trained weight matrix), q0 = min W moves to the nearest multiple of Δ, by at most Δ/2, so "
        "the error stays ≤ Δ/2 and the zero point −q0/Δ is an integer, the form ONNX Runtime's and TensorRT's integer "
        "kernels take: own-code ONNX files run at onnx-int8-dynamic's speed and compute exactly the variant the compress "
        "stage measured. paper: q0 = min W exactly as in §4.2; the zero point is then fractional, so own-code files "
        "carry the remainder as one extra input feature per Q/K/V and FFN-up GEMM (exact, but 5–7 % slower at batch 1 on CPU: "
        "runtime_bench/own_codes_speed.py). Choose paper to reproduce the paper's quantizer to the last bit.",
    )
    include: list[str] = Field(default_factory=lambda: ["*"], description="Glob patterns of parameter names to quantize (default every parameter, as the paper).")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of parameter names to keep in full precision.")
    tensorrt_int4_block: Literal[64, 128] | None = Field(
        default=64,
        description="Also make, at every sparsity level, the 4-bit variant TensorRT can run: symmetric signed INT4 codes in "
        "blocks of this many input channels on every selected weight matrix (biases and LayerNorm stay fp32), named "
        "`<size>.sNN.b4.sym-g<block>`. It is a variant of its own (own codes, packed storage, accuracy) and the only "
        "source of `tensorrt-int4` files. None: no such variant. 64 divides every width that is a multiple of 64.",
    )

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: list[int]) -> list[int]:
        bad = [b for b in v if not (2 <= b <= 8 or b == 32)]
        if bad:
            raise ValueError(f"bits must be between 2 and 8 (or 32 = none), got {bad}")
        return sorted(set(v), reverse=True)

    @field_validator("zero_point")
    @classmethod
    def _zero_point(cls, v: str, info: ValidationInfo) -> str:
        if v == "integer" and info.data.get("symmetric"):  # `symmetric` is declared above, so already validated
            raise ValueError("'integer' applies to the asymmetric grid; a symmetric grid's zero point is 0 already "
                             "(drop zero_point, or set symmetric: false)")
        return v


class PruneConfig(Section):
    """Iterative magnitude pruning (§4.3): prune `step` more, recover by finetuning, repeat."""

    sparsity: list[float] = Field(
        default_factory=lambda: [0.15, 0.30, 0.45, 0.60, 0.75, 0.90],
        description="Sparsity levels to save (fractions, paper: 0.15 … 0.90).",
    )
    step: float = Field(
        default=0.15, gt=0, lt=1,
        description="Additional fraction of weights zeroed per pruning step; the ladder runs step, 2·step, … up to the "
        "highest level, and also stops at any requested level that is not a multiple of step. Each level is the previous one pruned further.",
    )
    scope: Literal["global", "per-layer"] = Field(default="global", description="Rank magnitudes over all pruned tensors at once, or within each tensor.")
    include: list[str] = Field(
        default_factory=lambda: ["*.weight"],
        description="Glob patterns of parameters to prune (only matrices, ≥ 2-D, are ever pruned, so biases never are). Default: every "
        "Linear weight and the word embeddings, which hold almost all parameters (the paper counts nonzeros over the whole model).",
    )
    exclude: list[str] = Field(
        default_factory=lambda: ["*LayerNorm*", "*layer_norm*", "*position_embeddings*", "*token_type_embeddings*", "classifier.out_proj.*"],
        description="Glob patterns never pruned. Default: LayerNorm (scales, not connections), position and token-type embeddings "
        "(tiny tables whose rows every input uses) and the classifier's output projection (num_labels rows; zeroing them removes whole decision directions).",
    )
    recovery_target: float = Field(default=0.995, gt=0, le=1, description="Stop recovery once dev accuracy ≥ this × the unpruned dev accuracy.")
    recovery_max_epochs: float = Field(
        default=1.0, gt=0,
        description="Stop recovery after this many epochs at most (paper: one). Accuracy is checked before the first step too, so a level already within target takes none.",
    )
    recovery_max_steps: int | None = Field(default=None, ge=0, description="Hard cap on recovery steps per level (quick runs).")
    recovery_eval_every_steps: int = Field(default=50, ge=1, description="Check dev accuracy every N recovery steps.")
    lr: float | None = Field(default=None, gt=0, description="Recovery learning rate (None = the finetune lr / 2).")

    @field_validator("sparsity")
    @classmethod
    def _levels(cls, v: list[float]) -> list[float]:
        bad = [s for s in v if not 0 < s < 1]
        if bad:
            raise ValueError(f"sparsity levels must be fractions between 0 and 1, got {bad}")
        return sorted(set(v))


class AnalysisConfig(Section):
    """Compression-error analysis (§5.3, Figure 9)."""

    bits: int = Field(default=4, ge=2, le=8, description="Bit width for the quantization error.")
    sparsity: float = Field(default=0.6, gt=0, lt=1, description="Sparsity for the pruning error (one-shot magnitude).")


class CompressConfig(Section):
    """Pruning ladder × quantization bits, every variant stored as a packed artifact."""

    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig, description="Quantization settings.")
    prune: PruneConfig = Field(default_factory=PruneConfig, description="Pruning settings.")
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig, description="Error analysis settings.")

    def key_omitted(self) -> dict[str, Any]:
        """Fields left out of the cache key where they change nothing compress computed before they existed, so those
        run directories keep their keys: zero_point at `paper` (every grid before the field) or on a symmetric grid
        (no zero point). The default, `integer`, is a different grid and keys compress and every later stage."""
        q = self.quantize
        return {"quantize": {"zero_point"}} if q.zero_point == "paper" or q.symmetric else {}
