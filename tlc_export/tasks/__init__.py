"""Task families (`base.TaskFamily`): the registry and how a recipe picks its family."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlc_export.tasks.base import Metric, SplitData, TaskFamily

if TYPE_CHECKING:
    from tlc_export.recipe import Recipe

DEFAULT_FAMILY = "classification"


def families() -> dict[str, TaskFamily]:
    """Every family by name (imported here, so a family module loads only when asked for)."""
    from tlc_export.tasks.classification import ClassificationFamily
    from tlc_export.tasks.translation import TranslationFamily

    return {f.name: f for f in (ClassificationFamily(), TranslationFamily())}


def get_family(name: str) -> TaskFamily:
    known = families()
    if name not in known:
        raise KeyError(f"unknown task family {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def family_of(recipe: Recipe) -> TaskFamily:
    """The family whose section the recipe has (validation allows at most one); a recipe with none
    (pretraining only) is classification's, the project's first family."""
    found = [f for f in families().values() if f.name != DEFAULT_FAMILY and f.configured(recipe)]
    return found[0] if found else get_family(DEFAULT_FAMILY)


__all__ = ["Metric", "SplitData", "TaskFamily", "families", "family_of", "get_family"]
