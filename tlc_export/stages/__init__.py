"""Pipeline stages. `all_stages()` lists them in run order."""

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

    return [DataStage(), PretrainStage(), FinetuneStage(), CompressStage(), ExportStage(), BenchStage(), ReportStage(),
            TranslationStage()]
