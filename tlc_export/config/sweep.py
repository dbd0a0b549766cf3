"""`sweep` section: the paper's ablations as one recipe, run as one sub-run per point."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from tlc_export.config.common import Section


class SweepConfig(Section):
    """Recipe field paths mapped to lists of values, e.g. `pretrain.batch_size: [256, 2048]`.

    Every key with a dot is a field path (as written in the YAML, e.g. `data.fraction`,
    `finetune.from`); `mode` says how the lists combine. Each combination is a point: a complete
    recipe, validated on its own, run as a sub-run of one parent run directory. Points share every
    stage whose cache key they have in common (the data stage when only `pretrain.*` varies).
    """

    mode: Literal["product", "zip"] = Field(
        default="product",
        description="product: every combination of the lists (the last path varies fastest); zip: the i-th value "
        "of every list together (all lists the same length), e.g. a batch size with its own learning rate.",
    )
    fields: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Field path → values. Usually written inline beside `mode` (`pretrain.lr: [1e-3, 2e-3]`); "
        "collected here.",
    )

    @model_validator(mode="before")
    @classmethod
    def _collect_paths(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = {k: v for k, v in data.items() if "." not in str(k)}
        paths = {str(k): v for k, v in data.items() if "." in str(k)}
        if paths:
            out["fields"] = {**(out.get("fields") or {}), **paths}
        return out
