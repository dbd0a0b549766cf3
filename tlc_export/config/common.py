"""Base class shared by every recipe section."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict

S = TypeVar("S")


class Section(BaseModel):
    """A recipe section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def section_type(ann: Any) -> type[Section] | None:
    """The Section class a field's annotation holds (`X`, `X | None`, `list[X]`), else None."""
    import typing

    if isinstance(ann, type) and issubclass(ann, Section):
        return ann
    for arg in typing.get_args(ann):
        found = section_type(arg)
        if found is not None:
            return found
    return None


class SizeShape:
    """What every family's model size derives from its fields (`layers`, `hidden`, `heads`, `ffn`): attention
    heads (default hidden/64, at least 1), feed-forward width (default 4 × hidden) and the name `6L-512H`."""

    if TYPE_CHECKING:  # the fields are the sections' own (pydantic must not see them here: their order is the recipe's)
        layers: int
        hidden: int
        heads: int | None
        ffn: int | None

    @property
    def num_heads(self) -> int:
        return self.heads if self.heads is not None else max(1, self.hidden // 64)

    @property
    def ffn_size(self) -> int:
        return self.ffn if self.ffn is not None else 4 * self.hidden

    @property
    def name(self) -> str:
        return f"{self.layers}L-{self.hidden}H"


def check_size_grid(sizes: Sequence[Any] | None, depth: Sequence[int] | None, width: Sequence[int] | None,
                    names: Sequence[str]) -> None:
    """A size grid is `sizes` or the `depth` × `width` product, never both, never empty, no name twice
    (`names`: the grid's size names); raises ValueError saying which."""
    product = depth is not None or width is not None
    if sizes is not None and product:
        raise ValueError("give either `sizes` or `depth` × `width`, not both")
    if sizes is None and not product:
        raise ValueError("the size grid is empty: give `sizes` or `depth` and `width`")
    if sizes is not None and len(sizes) == 0:
        raise ValueError("the size grid is empty: `sizes` needs at least one entry")
    if product and (not depth or not width):
        raise ValueError("the size grid is empty: `depth` and `width` both need at least one value")
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise ValueError(f"duplicate sizes in the grid: {', '.join(dup)}")


def size_grid(sizes: Sequence[S] | None, depth: Sequence[int] | None, width: Sequence[int] | None,
              make: Callable[[int, int], S], cost: Callable[[S], float]) -> list[S]:
    """Every size of the grid (`sizes`, or `make(depth, width)` over the product), smallest `cost` first
    (ties: fewer layers, then narrower)."""
    grid = list(sizes) if sizes is not None else [make(d, w) for d in depth or [] for w in width or []]
    return sorted(grid, key=lambda s: (cost(s), s.layers, s.hidden))  # type: ignore[attr-defined]
