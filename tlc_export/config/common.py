"""Base class shared by every recipe section."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


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
