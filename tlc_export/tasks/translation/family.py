"""Translation, the second task family: parallel sentences, a Marian encoder-decoder trained from
scratch, label-smoothed cross-entropy, greedy/beam decoding, and BLEU / chrF rows with intervals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlc_export.errors import StageError
from tlc_export.tasks.base import SplitData, TaskFamily, reject_options
from tlc_export.tasks.translation.metrics import METRIC, TranslationPredictions

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tlc_export.config.translation import TranslationConfig
    from tlc_export.recipe import Recipe
    from tlc_export.stages.base import Stage


class TranslationFamily(TaskFamily):
    name = "translation"
    section = "translation"
    metric = METRIC
    # `config.translation.EXPORT_FORMATS`, written out: `tlc predict` loads families without pydantic.
    export_formats = ("onnx-fp32", "onnx-int8-dynamic", "onnx-int8", "onnx-int4")

    def stages(self) -> list[Stage]:
        from tlc_export.stages.report import ReportStage
        from tlc_export.tasks.translation.stages.bench import TranslationBenchStage
        from tlc_export.tasks.translation.stages.compress import TranslationCompressStage
        from tlc_export.tasks.translation.stages.export import TranslationExportStage
        from tlc_export.tasks.translation.stages.train import TranslationStage

        return [TranslationStage(), TranslationCompressStage(), TranslationExportStage(), TranslationBenchStage(),
                ReportStage()]

    def write_report(self, run_root: Path, out_dir: Path, recipe: Recipe) -> dict[str, Any]:
        """From translation/, compress/, export/ and bench/ results (`tasks/translation/report/`)."""
        from tlc_export.tasks.translation.report import (
            build_translation_report,
            load_translation_report_data,
        )

        data = load_translation_report_data(run_root, name=recipe.name)
        if not data.models and not data.variants:
            raise StageError(
                f"{run_root}: neither translation/results.json nor compress/results.json has rows; "
                "run the translation and compress stages first"
            )
        return build_translation_report(data, out_dir, recipe.report.storage_budgets_mb)

    def commands(self) -> list[Any]:
        """`tlc translate RUN_DIR TEXT…`: a finished run's model on new text."""
        from tlc_export.tasks.translation.serve import translate_command

        return [translate_command(self)]

    def prepare_data(self, recipe: Recipe) -> dict[str, str]:
        """Parallel data only (no pretraining corpus, no classification task): read and split once."""
        from tlc_export.data.fetch import tlc_home

        split = self.read(recipe)
        c = split.counts()
        return {f"translation.data ({_translation(recipe).data.kind})":
                f"{c['train']:,} train / {c['dev']:,} dev / {c['test']:,} test pairs ({split.info['split_rule']})",
                "cache": str(tlc_home())}

    def read(self, recipe: Recipe) -> SplitData:
        from tlc_export.tasks.translation.data import read_pairs

        return read_pairs(_translation(recipe), recipe.base_dir)

    def build_model(self, recipe: Recipe, *, size: Any = None, checkpoint: Path | None = None,
                    **options: Any) -> nn.Module:
        """A fresh MarianMTModel for `size` (options: `source_vocab`, `target_vocab` (None = shared), `seed`),
        or the one saved at `checkpoint`."""
        from tlc_export.tasks.translation.model import build_translation_model

        if checkpoint is not None:
            from transformers import MarianMTModel

            from tlc_export.finetune.model import quiet_transformers

            if not (Path(checkpoint) / "config.json").is_file():
                raise StageError(f"{checkpoint}: no translation model here (config.json missing); run its training first")
            with quiet_transformers():
                return MarianMTModel.from_pretrained(str(checkpoint))
        if size is None or "source_vocab" not in options:
            raise StageError("a fresh translation model needs `size` and `source_vocab` (and `target_vocab` unless shared)")
        return build_translation_model(size, _translation(recipe), options["source_vocab"],
                                       options.get("target_vocab"), seed=options.get("seed"))

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], recipe: Recipe) -> torch.Tensor:
        """Label-smoothed cross-entropy (ε = translation.train.label_smoothing) per target token."""
        return smoothed_loss(model, batch, _translation(recipe).train.label_smoothing)

    def predict(self, model: nn.Module, tokenizer: Any, splits: Mapping[str, Sequence[Any]],
                recipe: Recipe) -> dict[str, Any]:
        from tlc_export.tasks.translation.decode import translate

        cfg = _translation(recipe)
        out = {}
        for name, pairs in splits.items():
            sources = [p.source for p in pairs]
            hyps = translate(model, tokenizer, sources, cfg.decoding, max_source_length=cfg.max_source_length)
            out[name] = TranslationPredictions(sources, [p.target for p in pairs], hyps)
        return out

    def row_fields(self, predictions: Mapping[str, Any]) -> dict[str, Any]:
        """`<split>_bleu`, `<split>_bleu_ci`, `<split>_chrf`, `<split>_chrf_ci`, `<split>_n` per split, and the
        sacrebleu signatures and interval method (the same for every split). On the report split also the
        trivial baseline, as classification's majority class: `copy_baseline_bleu` (the source sentence
        given as its own translation, which already scores names, numbers and punctuation) and
        `learned_task` (the model won the paired comparison against it, `translation.metrics.compare_statistics`;
        None on fewer than `MIN_SENTENCES` sentences; `above_copy_p`)."""
        from tlc_export.scoring import REPORT_SPLIT
        from tlc_export.tasks.translation.metrics import (
            INTERVAL_METHOD,
            compare_translations,
            score_translations,
        )

        out: dict[str, Any] = {}
        for split, p in predictions.items():
            s = score_translations(p.hypotheses, p.references)
            out.update({f"{split}_bleu": s.bleu, f"{split}_bleu_ci": s.bleu_ci, f"{split}_chrf": s.chrf,
                        f"{split}_chrf_ci": s.chrf_ci, f"{split}_n": s.n})
            out["bleu_signature"], out["chrf_signature"] = s.bleu_signature, s.chrf_signature
        out["interval_method"] = INTERVAL_METHOD
        rep = predictions.get(REPORT_SPLIT)
        if rep is not None and rep.references:
            vs = compare_translations(rep.hypotheses, rep.sources, rep.references)
            learned = None if vs.outcome == "not tested" else vs.outcome == "won"  # too few sentences to tell
            out.update(copy_baseline_bleu=vs.bleu_b, learned_task=learned, above_copy_p=vs.p_value)
        return out

    def choose_bundle(self, run_dir: Path, **selection: Any) -> Any:
        """The named variant, or the best dev BLEU within a storage / ONNX Runtime latency budget."""
        from tlc_export.tasks.translation.package.select import choose_translation

        return choose_translation(run_dir, **selection)

    def write_bundle(self, run_dir: Path, choice: Any, out: Path, **options: Any) -> dict[str, Any]:
        """encoder.onnx + decoder.onnx, the tokenizer, tlc.json and a README (options: force, name)."""
        from tlc_export.tasks.translation.package.bundle import write_translation_bundle

        return write_translation_bundle(run_dir, choice, out, **options)

    def package_summary(self, meta: Mapping[str, Any], out: Path) -> list[str]:
        from tlc_export.tasks.translation.package.readme import translation_summary

        return translation_summary(dict(meta), out)

    def open_bundle(self, bundle_dir: Path) -> Any:
        from tlc_export.tasks.translation.serving.translator import TranslationBundle

        return TranslationBundle.open(bundle_dir, verify=True)

    def open_predictor(self, bundle_dir: Path, *, batch_size: int = 32, threads: int | None = None) -> Any:
        """A `tlc_export.tasks.translation.serving.translator.Translator` (`.translate(texts)` → translations)."""
        from tlc_export.tasks.translation.serving.translator import TranslationBundle, Translator

        return Translator(TranslationBundle.open(bundle_dir), batch_size=batch_size, threads=threads)

    def predict_cli(self, console: Any, bundle_dir: Path, texts: list[str], file: Path | None,
                    **options: Any) -> list[dict[str, Any]]:
        """options: text_column, reference_column, batch_size, threads, output, jsonl."""
        from tlc_export.tasks.translation.serving.cli import run_translate

        keys = ("text_column", "reference_column", "batch_size", "threads", "output", "jsonl")
        reject_options(self.name, options, keys, "references to score BLEU against are --reference-column")
        o = {k: options.get(k) for k in keys}
        return run_translate(console, bundle_dir, texts, file, text_column=o["text_column"] or "text",
                             reference_column=o["reference_column"], batch_size=o["batch_size"] or 32,
                             threads=o["threads"], output=o["output"], jsonl=bool(o["jsonl"]))


def smoothed_loss(model: nn.Module, batch: Mapping[str, torch.Tensor], epsilon: float) -> torch.Tensor:
    """Mean label-smoothed cross-entropy over the batch's target tokens."""
    from tlc_export.tasks.translation.loss import label_smoothed_loss, teacher_forced_logits

    parts = label_smoothed_loss(teacher_forced_logits(model, dict(batch)), batch["labels"], epsilon)
    return parts.smoothed / parts.tokens.clamp(min=1)


def _translation(recipe: Recipe) -> TranslationConfig:
    cfg = getattr(recipe, "translation", None)
    if cfg is None:
        raise StageError("the translation family needs a `translation` section")
    return cfg
