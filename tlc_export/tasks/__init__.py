"""The registry: the one place above the task families that names them.

A family is one folder, `tlc_export/tasks/<family>/`, and one line in `REGISTRY` (name → "module:Class",
imported on first use, so `tlc predict` on a translation bundle loads no classification code and no torch).
Everything above the families (the runner, the CLI, `tlc package` / `tlc predict`) asks this module for a
recipe's, a run's or a bundle's family; the stages get theirs from `StageContext.family`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlc_export.tasks.base import Metric, SplitData, TaskFamily

if TYPE_CHECKING:
    from tlc_export.recipe import Recipe

REGISTRY: dict[str, str] = {
    "classification": "tlc_export.tasks.classification.family:ClassificationFamily",
    "translation": "tlc_export.tasks.translation.family:TranslationFamily",
}
# A recipe no other family claims (a pretraining-only one) is the project's first family's.
DEFAULT_FAMILY = "classification"


def _load(spec: str) -> TaskFamily:
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)()


def families() -> dict[str, TaskFamily]:
    """Every registered family by name."""
    return {name: _load(spec) for name, spec in REGISTRY.items()}


def get_family(name: str) -> TaskFamily:
    if name not in REGISTRY:
        raise KeyError(f"unknown task family {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return _load(REGISTRY[name])


def family_of(recipe: Recipe) -> TaskFamily:
    """The family whose section the recipe has (validation allows at most one); a recipe with none
    (pretraining only) is the default family's."""
    for name in REGISTRY:
        if name != DEFAULT_FAMILY:
            family = get_family(name)
            if family.configured(recipe):
                return family
    return get_family(DEFAULT_FAMILY)


def stage_names() -> list[str]:
    """Every family's stage names, in pipeline order (a step two families share appears once)."""
    names: list[str] = []
    for family in families().values():
        for i, s in enumerate(family.stages()):
            if s.name not in names:
                later = [t.name for t in family.stages()[i + 1:] if t.name in names]
                names.insert(names.index(later[0]) if later else len(names), s.name)
    return names


def family_of_run(run_dir: str | Path) -> TaskFamily:
    """The task family of a run (its recipe's), which packages it."""
    from tlc_export.package.choice import run_recipe

    return family_of(run_recipe(run_dir))


def family_of_bundle(bundle_dir: str | Path) -> TaskFamily:
    """The task family that reads this bundle (tlc.json `family`, classification when absent)."""
    from tlc_export.serving.bundle import BundleError, bundle_family

    name = bundle_family(bundle_dir)
    try:
        return get_family(name)
    except KeyError as e:
        raise BundleError(f"{Path(bundle_dir) / 'tlc.json'}: family {name!r} is not one this tlc knows ({e.args[0]}); "
                          "upgrade tlc or re-create the bundle") from e


def open_predictor(bundle_dir: str | Path, *, batch_size: int = 32, threads: int | None = None) -> Any:
    """The predictor of any bundle, by the family its tlc.json names: a classification `Predictor`
    (`.predict(texts)`) or a translation `Translator` (`.translate(texts)`). No torch is imported."""
    return family_of_bundle(bundle_dir).open_predictor(Path(bundle_dir), batch_size=batch_size, threads=threads)


__all__ = ["REGISTRY", "Metric", "SplitData", "TaskFamily", "families", "family_of", "family_of_bundle",
           "family_of_run", "get_family", "open_predictor", "stage_names"]
