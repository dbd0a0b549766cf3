"""`models` section: the grid of model sizes, as a list or as the paper's depth × width product."""

from __future__ import annotations

from pydantic import Field, model_validator

from tlc_export.config.common import Section, SizeShape, check_size_grid, size_grid


class ModelSize(SizeShape, Section):
    """One pre-LayerNorm RoBERTa size."""

    layers: int = Field(ge=1, le=128, description="Number of Transformer layers (depth).")
    hidden: int = Field(ge=8, le=16384, description="Hidden size (width).")
    heads: int | None = Field(default=None, ge=1, description="Attention heads; default hidden/64 (at least 1).")
    ffn: int | None = Field(default=None, ge=1, description="Feed-forward inner size; default 4 × hidden.")

    @model_validator(mode="after")
    def _divisible(self) -> ModelSize:
        if self.hidden % self.num_heads != 0:
            raise ValueError(
                f"hidden={self.hidden} is not divisible by heads={self.num_heads}; "
                "pick heads that divide hidden (default is hidden/64)"
            )
        return self



class ModelsConfig(Section):
    """The size grid. Give either `sizes`, or `depth` and `width` (their product, as in the paper)."""

    sizes: list[ModelSize] | None = Field(default=None, description="Explicit list of sizes.")
    depth: list[int] | None = Field(default=None, description="Depths for the product grid (paper: 3, 6, 12, 18, 24).")
    width: list[int] | None = Field(default=None, description="Hidden sizes for the product grid (paper: 256 … 1536).")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="Hidden and attention dropout.")

    @model_validator(mode="after")
    def _one_form(self) -> ModelsConfig:
        check_size_grid(self.sizes, self.depth, self.width, [s.name for s in self.grid()])
        return self

    def grid(self) -> list[ModelSize]:
        """Every size, smallest parameter count first."""
        return size_grid(self.sizes, self.depth, self.width, lambda d, w: ModelSize(layers=d, hidden=w),
                         lambda s: s.layers * s.hidden * s.hidden)
