"""The task-family plug-in: everything that differs between classification and translation.

A task family owns its data reader, its model builder, its training loss, its metric, its decoding
and the metric fields its result rows carry. Stages ask `tlc_export.tasks.family_of(recipe)` for the
run's family and call it; they never branch on the task's name. Selection and reporting are the
same for every family (`tlc_export.scoring`: dev selects, test reports); what a family adds is what
"a prediction" and "the score" mean for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tlc_export.recipe import Recipe


@dataclass(frozen=True)
class Metric:
    """The score a family selects on (dev) and reports (test).

    `field` names the result-row fields: `<split>_<field>` and `<split>_<field>_ci`, e.g.
    `dev_accuracy`, `test_bleu_ci`. `scale` is the largest possible value (1.0 for a fraction,
    100.0 for BLEU), so a report can format any family's score.
    """

    field: str
    label: str
    scale: float
    higher_is_better: bool = True


@dataclass
class SplitData:
    """A family's examples in the three splits every family has (train learns, dev selects, test reports)."""

    train: Sequence[Any]
    dev: Sequence[Any]
    test: Sequence[Any]
    info: dict[str, Any]  # what the reader reports about the data and its split (JSON-able)

    def counts(self) -> dict[str, int | None]:
        """Examples per split; None for a streamed split, whose size is known only once read."""
        return {s: len(x) if hasattr(x, "__len__") else None
                for s, x in (("train", self.train), ("dev", self.dev), ("test", self.test))}


class TaskFamily(ABC):
    """One kind of task. Subclasses are stateless: every method takes what it needs."""

    name: ClassVar[str]
    # The recipe section that configures the family; a recipe selects the family by having it.
    section: ClassVar[str]
    metric: ClassVar[Metric]

    def configured(self, recipe: Recipe) -> bool:
        return getattr(recipe, self.section, None) is not None

    @abstractmethod
    def read(self, recipe: Recipe) -> SplitData:
        """The examples, split into train / dev / test (the split is the family's: a stable hash, or by book)."""

    @abstractmethod
    def build_model(self, recipe: Recipe, *, size: Any = None, checkpoint: Path | None = None,
                    **options: Any) -> nn.Module:
        """A model for `size` (a fresh one) or loaded from `checkpoint`; `options` are family-specific."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], recipe: Recipe) -> torch.Tensor:
        """The training loss of one batch (a scalar the optimizer minimises)."""

    @abstractmethod
    def predict(self, model: nn.Module, tokenizer: Any, splits: Mapping[str, Sequence[Any]],
                recipe: Recipe) -> dict[str, Any]:
        """Decode every named split: `{split: predictions}` in split order, what `row_fields` scores."""

    @abstractmethod
    def row_fields(self, predictions: Mapping[str, Any]) -> dict[str, Any]:
        """The metric fields of a result row (with intervals) from `predict`'s output."""
