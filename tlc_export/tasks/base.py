"""The task-family plug-in: everything that differs between task families (classification, translation, …).

A task family owns its pipeline (`stages`), its data reader, its model builder, its training loss, its
metric, its decoding and the metric fields its result rows carry. The runner asks the registry
(`tlc_export.tasks`) for the recipe's family once and hands it to every stage as `StageContext.family`;
nothing branches on the task's name. Selection and reporting are the
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
    # Every `export.formats` value the family's export stage can write (`tlc export --formats` checks it).
    export_formats: ClassVar[tuple[str, ...]] = ()

    def configured(self, recipe: Recipe) -> bool:
        return getattr(recipe, self.section, None) is not None

    @abstractmethod
    def stages(self) -> list[Any]:
        """The family's pipeline (`tlc_export.stages.base.Stage` instances), in run order (the runner keeps those whose section the recipe has). A step
        several families have (compress, export, …) keeps its name, so run folders and `--until` read the same."""

    def write_report(self, run_root: Path, out_dir: Path, recipe: Recipe) -> dict[str, Any]:
        """The report stage's work: index.html and summary.md in `out_dir` from the run's results; returns the
        stage's outputs (a `verdict` sentence, when there is one, is printed). StageError when there is
        nothing to report."""
        raise _no_report(self.name)

    def commands(self) -> list[Any]:
        """CLI commands of the family's own (`click.Command`s; the CLI reports their `TlcError`s)."""
        return []

    def prepare_data(self, recipe: Recipe) -> dict[str, str]:
        """`tlc data prepare`: fetch and check what the recipe reads; {what: one-line description}."""
        return {}

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

    # Serving: `tlc package` writes a bundle, `tlc predict` runs one. Each family implements these with
    # imports inside the methods, so that predicting loads neither torch nor the other family's code.

    def choose_bundle(self, run_dir: Path, **selection: Any) -> Any:
        """The (variant, format) `tlc package` ships (`tlc_export.package.Choice`): `variant`/`fmt`, or
        `max_storage_mb`, or `max_latency_ms` (with `backend`, `batch`); `export_missing`."""
        raise _no_bundle(self.name)

    def write_bundle(self, run_dir: Path, choice: Any, out: Path, **options: Any) -> dict[str, Any]:
        """Write the bundle of `choice` to `out` atomically (options: `force`, `name`, …); returns its tlc.json."""
        raise _no_bundle(self.name)

    def package_summary(self, meta: Mapping[str, Any], out: Path) -> list[str]:
        """The lines (rich markup) `tlc package` prints about a bundle it wrote."""
        return [f"packaged {meta.get('variant')} ({meta.get('format')}) → {out}"]

    def open_bundle(self, bundle_dir: Path) -> Any:
        """The bundle of this family, every file checked against the checksums its tlc.json records."""
        raise _no_bundle(self.name)

    def open_predictor(self, bundle_dir: Path, *, batch_size: int = 32, threads: int | None = None) -> Any:
        """The Python predictor of a bundle of this family (checksums verified)."""
        raise _no_bundle(self.name)

    def predict_cli(self, console: Any, bundle_dir: Path, texts: list[str], file: Path | None,
                    **options: Any) -> list[dict[str, Any]]:
        """`tlc predict` on a bundle of this family: one JSON-able record per input, in input order."""
        raise _no_bundle(self.name)


def _no_report(name: str) -> Exception:
    from tlc_export.errors import StageError

    return StageError(f"the {name} task family writes no report")


def _no_bundle(name: str) -> Exception:
    from tlc_export.errors import TlcError

    return TlcError(f"the {name} task family has no serving bundle")


def reject_options(family: str, options: Mapping[str, Any], allowed: Sequence[str], hint: str = "") -> None:
    """A CLI option another family's bundle takes, given here, is an error (not silently ignored)."""
    from tlc_export.errors import TlcError

    extra = sorted(k for k, v in options.items() if k not in allowed and v not in (None, False))
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise TlcError(f"{flags}: not an option of a {family} bundle" + (f"; {hint}" if hint else ""))
