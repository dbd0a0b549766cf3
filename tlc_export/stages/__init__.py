"""Pipeline stages. `all_stages()` lists them in run order (each family's implementation of a step)."""

from __future__ import annotations

from tlc_export.stages.base import Stage


def all_stages() -> list[Stage]:
    """Every stage, in pipeline order. Imported lazily so `tlc validate` stays fast."""
    from tlc_export.stages.bench import BenchStage
    from tlc_export.stages.compress import CompressStage
    from tlc_export.stages.data import DataStage
    from tlc_export.stages.export import ExportStage
    from tlc_export.stages.finetune import FinetuneStage
    from tlc_export.stages.pretrain import PretrainStage
    from tlc_export.stages.report import ReportStage
    from tlc_export.stages.translation import TranslationStage
    from tlc_export.stages.translation_bench import TranslationBenchStage
    from tlc_export.stages.translation_compress import TranslationCompressStage
    from tlc_export.stages.translation_export import TranslationExportStage
    from tlc_export.stages.translation_report import TranslationReportStage

    # One stage per pipeline step and family: a step's name (compress, export, …) is shared, and
    # `Stage.enabled` keeps the recipe's family's own implementation (`Stage.families`).
    return [DataStage(), PretrainStage(), FinetuneStage(), TranslationStage(),
            CompressStage(), TranslationCompressStage(), ExportStage(), TranslationExportStage(),
            BenchStage(), TranslationBenchStage(), ReportStage(), TranslationReportStage()]
