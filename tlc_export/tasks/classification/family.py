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
from tlc_export.tasks.base import Metric, SplitData, TaskFamily, reject_options

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tlc_export.recipe import Recipe
    from tlc_export.stages.base import Stage


class ClassificationFamily(TaskFamily):
    name = "classification"
    section = "finetune"
    metric = Metric(field="accuracy", label="accuracy", scale=1.0)
    # `config.export.ExportFormat`'s values, written out: `tlc predict` loads families without pydantic.
    export_formats = ("onnx-fp32", "onnx-fp16", "onnx-int8", "onnx-int8-dynamic", "onnx-int8-static", "onnx-int4",
                      "onnx-int4-matmulnbits", "tensorrt-int8", "tensorrt-int4")

    def stages(self) -> list[Stage]:
        from tlc_export.stages.report import ReportStage
        from tlc_export.tasks.classification.stages.bench import BenchStage
        from tlc_export.tasks.classification.stages.compress import CompressStage
        from tlc_export.tasks.classification.stages.data import DataStage
        from tlc_export.tasks.classification.stages.export import ExportStage
        from tlc_export.tasks.classification.stages.finetune import FinetuneStage
        from tlc_export.tasks.classification.stages.pretrain import PretrainStage

        return [DataStage(), PretrainStage(), FinetuneStage(), CompressStage(), ExportStage(), BenchStage(),
                ReportStage()]

    def write_report(self, run_root: Path, out_dir: Path, recipe: Recipe) -> dict[str, Any]:
        from tlc_export.report import build_report, load_report_data

        data = load_report_data(run_root, name=recipe.name)
        if not data.variants and not data.bench:
            raise StageError(
                f"{run_root}: neither compress/results.json nor bench/results.jsonl has rows; "
                "run the compress and bench stages first"
            )
        cfg = recipe.report
        from tlc_export.tasks.classification.plan_check import plan_comparison

        return build_report(data, out_dir, cfg.storage_budgets_mb, cfg.latency_budgets_ms,
                            margin=cfg.noninferiority_margin_points / 100, plan_check=plan_comparison(run_root, recipe))

    def prepare_data(self, recipe: Recipe) -> dict[str, str]:
        """Built-in corpora fetched and parsed once, local files listed, a hub source's first row read, the
        finetune task loaded."""
        from tlc_export.data.prepare import prepare_data

        return prepare_data(recipe)

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

    def choose_bundle(self, run_dir: Path, **selection: Any) -> Any:
        """The report's answer (or the named variant), exported on demand when the run left it out."""
        from tlc_export.tasks.classification.package.select import check_run, choose

        check_run(run_dir, [s.name for s in self.stages()])
        return choose(run_dir, family=self, **selection)

    def write_bundle(self, run_dir: Path, choice: Any, out: Path, **options: Any) -> dict[str, Any]:
        """model.onnx, HF config and tokenizer, tlc.json, README and a Triton repository
        (options: force, name, max_batch_size, allow_other_gpu)."""
        from tlc_export.tasks.classification.package.bundle import write_bundle

        return write_bundle(run_dir, choice, out, **options)

    def package_summary(self, meta: Mapping[str, Any], out: Path) -> list[str]:
        from tlc_export.tasks.classification.package.readme import classification_summary

        return classification_summary(dict(meta), out)

    def open_bundle(self, bundle_dir: Path) -> Any:
        from tlc_export.serving import Bundle

        return Bundle.open(bundle_dir, verify=True)

    def open_predictor(self, bundle_dir: Path, *, batch_size: int = 32, threads: int | None = None) -> Any:
        """A `tlc_export.serving.Predictor` (`.predict(texts)` → labels and probabilities)."""
        from tlc_export.serving import Bundle, Predictor

        return Predictor(Bundle.open(bundle_dir), batch_size=batch_size, threads=threads)

    def predict_cli(self, console: Any, bundle_dir: Path, texts: list[str], file: Path | None,
                    **options: Any) -> list[dict[str, Any]]:
        """options: text_column, pair_column, label_column, batch_size, threads, output, jsonl."""
        from tlc_export.tasks.classification.serving.cli import run_predict

        keys = ("text_column", "pair_column", "label_column", "batch_size", "threads", "output", "jsonl")
        reject_options(self.name, options, keys, "gold labels are --label-column")
        o = {k: options.get(k) for k in keys}
        return run_predict(console, bundle_dir, texts, file, o["text_column"] or "text", o["pair_column"],
                           o["label_column"], o["batch_size"] or 32, o["threads"], o["output"], bool(o["jsonl"]))


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
