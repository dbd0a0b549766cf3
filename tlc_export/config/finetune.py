"""`finetune` section: the downstream classification task and its training settings."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, ConfigDict, Field, field_validator, model_validator

from tlc_export.config.common import Section


class TaskConfig(Section):
    """A labelled text-classification task."""

    kind: Literal["rt-polarity", "brown-genre", "csv", "jsonl", "hf"] = Field(
        default="rt-polarity",
        description="rt-polarity: built-in movie-review polarity (Pang & Lee, SST's source); "
        "brown-genre: built-in fiction vs non-fiction, three-sentence chunks of the Brown corpus, split by text "
        "(dev_fraction / test_fraction are fractions of the texts of each genre), whose dev and test texts the "
        "pretraining corpus leaves out; "
        "csv / jsonl: local file with `text`, `label` (and optional `text_pair`); hf: `datasets` by name.",
    )
    path: str | None = Field(default=None, description="For csv/jsonl: the file, relative to the recipe file.")
    name: str | None = Field(default=None, description="For hf: dataset name (e.g. 'glue').")
    config: str | None = Field(default=None, description="For hf: configuration (e.g. 'sst2').")
    text_column: str = Field(default="text", description="Column with the text.")
    text_pair_column: str | None = Field(default=None, description="Column with the second text of a pair (None = single text).")
    label_column: str = Field(default="label", description="Column with the label (int or string).")
    dev_fraction: float = Field(default=0.1, gt=0, lt=0.5, description="Fraction held out as dev, by a stable hash of the text (of the documents, for brown-genre).")
    test_fraction: float = Field(default=0.1, gt=0, lt=0.5, description="Fraction held out as test, by a stable hash of the text (of the documents, for brown-genre).")
    max_train_examples: int | None = Field(default=None, gt=0, description="Cap the training split (quick runs).")
    max_eval_examples: int | None = Field(
        default=None, gt=0,
        description="Cap dev and test at this many examples each, a fixed subset by a stable hash (quick runs: every "
        "compressed variant is scored on both, so their size sets the compress and export stages' time).",
    )

    @model_validator(mode="after")
    def _needs(self) -> TaskConfig:
        if self.kind in ("csv", "jsonl") and not self.path:
            raise ValueError(f"task kind '{self.kind}' needs `path`")
        if self.kind == "hf" and not self.name:
            raise ValueError("task kind 'hf' needs `name`")
        return self


def _number(x: object) -> object:
    """A YAML `2e-4` string as the number it means; anything else unchanged (pydantic then says what is wrong)."""
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    return x


class FinetuneConfig(Section):
    """Finetuning of every pretrained size on the task.

    Every (lr, seed) combination of `lr` × `seeds` is trained; for each size the combination and
    checkpoint with the best dev accuracy is kept (dev selects; test only reports).
    """

    model_config = ConfigDict(populate_by_name=True)

    task: TaskConfig = Field(default_factory=TaskConfig, description="The downstream task.")
    start_from: Literal["final", "every-kept", "matched-perplexity"] = Field(
        default="final", alias="from",
        description="Which pretrained checkpoint each size is finetuned from. final: the end of its budget. "
        "every-kept: also every checkpoint kept earlier (pretrain.keep_checkpoints_at), each finetuned and quantized "
        "as `<size>@k<percent>` beside the size's own model (the paper's Figure 8: compressibility vs convergence). "
        "matched-perplexity: the first kept or final checkpoint whose validation perplexity is at most the worst "
        "size's final perplexity, so every size starts at the same perplexity (Table 2); the choice is recorded.",
    )
    lr: list[float] = Field(
        default_factory=lambda: [1e-4],
        description="Peak AdamW learning rate, or a list of them to try (the paper tunes it per size); each size keeps "
        "the one with the best dev accuracy. A single number is a one-element list.",
    )
    batch_size: int = Field(default=32, ge=1, description="Sequences per step.")
    epochs: float = Field(default=3.0, gt=0, description="Training epochs (fractions allowed); with `patience`, the cap.")
    patience: int | None = Field(
        default=None, ge=2,
        description="Plateau rule: end a candidate once this many dev evaluations in a row have not beaten its best, "
        "never before one full epoch (a model still at the majority class in its first evaluations has not plateaued) "
        "(None = train all `epochs`). Every candidate records `converged`: true when its best dev accuracy came at "
        "least two evaluations before its last, i.e. dev accuracy had stopped improving before training ended.",
    )
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1, description="Fraction of steps spent warming up, then linear decay.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    max_length: int = Field(default=64, ge=8, description="Truncate inputs to this many tokens.")
    eval_every_steps: int | None = Field(default=None, ge=1, description="Evaluate on dev every N steps (None = once per epoch).")
    dropout: float | None = Field(default=None, ge=0, lt=1, description="Override the classifier's dropout (None = the model's).")
    seeds: list[int] = Field(
        default_factory=lambda: [100],
        validation_alias=AliasChoices("seeds", "seed"),
        description="Seed(s) for the classifier head, dropout and data order (paper: 100, 300, 500); every seed is "
        "tried with every lr and the best dev combination is kept. A single number (also as `seed:`) is a one-element list.",
    )
    threads: int | None = Field(
        default=None, ge=1,
        description="CPU threads for torch (None = torch's default). On a shared 2-core machine 1 can be faster than 2 (spinning OpenMP threads).",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Training precision: auto = bf16 autocast on CUDA, fp32 on CPU. Evaluation is always fp32, so compressed variants are scored exactly.",
    )

    @field_validator("lr", mode="before")
    @classmethod
    def _lr_list(cls, v: object) -> object:
        if isinstance(v, str):  # YAML reads `2e-4` (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                raise ValueError(f"`lr` takes a number (e.g. 2.0e-4) or a list of numbers ([1.0e-4, 2.0e-4]), "
                                 f"got {v!r}") from None
        if isinstance(v, list):
            return [_number(x) for x in v]
        return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list(cls, v: object) -> object:
        return [v] if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("lr")
    @classmethod
    def _lr_values(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one learning rate")
        bad = [x for x in v if not x > 0]
        if bad:
            raise ValueError(f"learning rates must be positive, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate learning rates in {v}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seed_values(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one seed")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate seeds in {v}")
        return v

    def grid(self) -> list[tuple[float, int]]:
        """Every (lr, seed) candidate, in the order they are trained (lr-major)."""
        return [(lr, seed) for lr in self.lr for seed in self.seeds]
