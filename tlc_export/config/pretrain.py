"""`pretrain` section: masked-LM pretraining of every size for the same wall-clock budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tlc_export.config.common import Section


class PretrainConfig(Section):
    """Every size trains for `time_budget_s` seconds of training time (eval and checkpoints excluded)."""

    time_budget_s: float = Field(gt=0, description="Training wall-clock budget per size, in seconds of training steps only.")
    batch_size: int = Field(default=64, ge=1, description="Target batch in sequences, reached by gradient accumulation.")
    micro_batch_size: int | None = Field(
        default=None, ge=1,
        description="Sequences per forward pass. None: 16 on CPU; on CUDA the largest that fits (probed).",
    )
    lr: float = Field(default=5e-4, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field(default=(0.9, 0.98), description="AdamW betas (RoBERTa: 0.9, 0.98).")
    eps: float = Field(default=1e-6, gt=0, description="AdamW epsilon.")
    warmup_fraction: float = Field(
        default=0.06, ge=0, lt=1,
        description="Fraction of the time budget spent warming the lr up linearly; then linear decay to 0 at the budget.",
    )
    grad_clip: float | None = Field(default=1.0, gt=0, description="Clip the gradient norm (None = no clipping).")
    eval_every_s: float = Field(default=30.0, gt=0, description="Evaluate validation perplexity every this many training seconds.")
    eval_every_steps: int | None = Field(
        default=None, ge=1,
        description="Evaluate every this many optimizer steps instead of every eval_every_s seconds, so every size is "
        "evaluated at the same steps (the claims card then compares sample efficiency without interpolating). "
        "The final evaluation at the end of the budget happens either way.",
    )
    eval_batches: int = Field(default=20, ge=1, description="Validation batches per evaluation (fixed masks, so points are comparable).")
    eval_batch_size: int | None = Field(
        default=None, ge=1,
        description="Rows per validation batch (None = min(batch_size, 32)). Set it when sweeping batch_size, so "
        "every batch size is scored on the same validation rows and the sweep's curves compare batch by batch.",
    )
    checkpoint_every_s: float = Field(default=60.0, gt=0, description="Save a resumable checkpoint every this many training seconds.")
    keep_checkpoints_at: list[float] = Field(
        default_factory=list,
        description="Keep a loadable HF checkpoint (pretrain/<size>/kept/k<percent>/) when the training clock passes "
        "each of these fractions of time_budget_s, e.g. [0.25, 0.5, 1.0]; each is evaluated on the validation sample "
        "as it is kept. 1.0 is the final checkpoint. finetune.from: every-kept / matched-perplexity start from them "
        "(the paper's Figure 8 and Table 2).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when available, else CPU.")
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="auto: bf16 autocast on CUDA, fp32 on CPU.")
    compile: bool = Field(
        default=False,
        description="torch.compile the training step. Compilation runs before the clock starts (and again after a "
        "resume) and is reported as compile_s, outside the budget. Meant for CUDA; on CPU inductor's C++ backend "
        "works but compiles slowly.",
    )
    compile_backend: str = Field(
        default="inductor",
        description="torch.compile backend: inductor (fast kernels), or aot_eager / eager to debug compile problems.",
    )
    masked_only_head: bool = Field(
        default=True, description="Compute the vocabulary head only on masked positions (same loss, less work)."
    )
    seed: int = Field(default=0, description="Seed for initialisation, data order and masking.")
    seeds: list[int] | None = Field(
        default=None,
        description="Pretraining seeds that replicate every size (e.g. [0, 1]). The first is `seed` (it trains into "
        "pretrain/<size>/ and feeds finetuning, as a one-seed run does); each further seed trains every size again, "
        "same budget, into pretrain/replicas/seed-<s>/<size>/. With two or more, claims 1 and 2 (and a sweep's 6 and "
        "7) take their interval over the seeds instead of one seed's validation batches. None or one seed: a "
        "one-seed run, same folders and cache keys as without this field.",
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch (None = torch's default).")

    @field_validator("keep_checkpoints_at")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0 < f <= 1]
        if bad:
            raise ValueError(f"fractions of the budget must be in (0, 1], got {bad}")
        return sorted(set(v))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and not v:
            raise ValueError("give at least one seed, or leave pretrain.seeds out")
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"duplicate seeds in {v}")
        return v

    @model_validator(mode="after")
    def _first_seed(self) -> PretrainConfig:
        if self.seeds:
            if "seed" in self.model_fields_set and self.seed != self.seeds[0]:
                raise ValueError(f"pretrain.seed={self.seed} and pretrain.seeds={self.seeds} disagree: the first of "
                                 "seeds is the seed; drop pretrain.seed or make it the first of seeds")
            if self.seed != self.seeds[0]:
                self.seed = self.seeds[0]
        return self

    def replica_seeds(self) -> list[int]:
        """The seeds after the first: each trains every size once more."""
        return list(self.seeds[1:]) if self.seeds else []

    def key_omitted(self) -> set[str]:
        """Fields left out of the cache key at their one-seed value, so one-seed runs keep their keys."""
        return {"seeds"} if not self.replica_seeds() else set()

    @model_validator(mode="after")
    def _micro(self) -> PretrainConfig:
        if self.micro_batch_size is not None and self.micro_batch_size > self.batch_size:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} is larger than batch_size={self.batch_size}"
            )
        return self
