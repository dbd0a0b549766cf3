"""Classification, the first task family: a thin adapter over the finetune code that predates families.

Reader `tlc_export.data.task.load_task`, model `tlc_export.finetune.model.load_classifier` (a
RobertaPreLayerNormForSequenceClassification from a pretrained checkpoint), loss the model's own
cross-entropy, decoding the argmax label, row fields `tlc_export.scoring.accuracy_fields`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlc_export.errors import StageError
from tlc_export.tasks.base import Metric, SplitData, TaskFamily

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tlc_export.recipe import Recipe


class ClassificationFamily(TaskFamily):
    name = "classification"
    section = "finetune"
    metric = Metric(field="accuracy", label="accuracy", scale=1.0)

    def read(self, recipe: Recipe) -> SplitData:
        from tlc_export.data.task import load_task

        cfg = _finetune(recipe)
        task = load_task(cfg.task, recipe)
        info = {"kind": cfg.task.kind, "examples": task.counts(), "label_names": task.label_names,
                "num_labels": task.num_labels}
        return ClassificationData(task.train, task.dev, task.test, info, task)

    def build_model(self, recipe: Recipe, *, size: Any = None, checkpoint: Path | None = None,
                    **options: Any) -> nn.Module:
        """A classifier from a pretrained masked-LM or classifier checkpoint (classification never starts
        from scratch). options: `num_labels` sizes a fresh head; `dropout` overrides the checkpoint's."""
        if checkpoint is None:
            raise StageError("classification models start from a pretrained checkpoint; pass `checkpoint`")
        from tlc_export.finetune.model import load_classifier

        return load_classifier(checkpoint, num_labels=options.get("num_labels"), dropout=options.get("dropout"))

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], recipe: Recipe) -> torch.Tensor:
        """transformers' sequence-classification cross-entropy (batch: input_ids, attention_mask, labels)."""
        return model(**batch).loss

    def predict(self, model: nn.Module, tokenizer: Any, splits: Mapping[str, Sequence[Any]],
                recipe: Recipe) -> dict[str, Any]:
        from tlc_export.finetune.evaluate import predict_splits

        return predict_splits(model, tokenizer, dict(splits), _finetune(recipe).max_length)

    def row_fields(self, predictions: Mapping[str, Any]) -> dict[str, Any]:
        from tlc_export.scoring import accuracy_fields

        return accuracy_fields(predictions)


class ClassificationData(SplitData):
    """SplitData that also keeps the reader's `TaskData` (labels, label names) for the code that uses it."""

    def __init__(self, train: Sequence[Any], dev: Sequence[Any], test: Sequence[Any], info: dict[str, Any],
                 task: Any) -> None:
        super().__init__(train, dev, test, info)
        self.task = task

    @property
    def num_labels(self) -> int:
        return int(self.task.num_labels)

    @property
    def label_names(self) -> list[str]:
        return list(self.task.label_names)


def _finetune(recipe: Recipe) -> Any:
    if recipe.finetune is None:
        raise StageError("the classification family needs a `finetune` section (its task and settings)")
    return recipe.finetune
