"""`export` stage of the translation family (placeholder: being built)."""

from __future__ import annotations

from typing import Any

from tlc_export.errors import StageError
from tlc_export.stages.base import Stage, StageContext


class TranslationExportStage(Stage):
    name = "export"
    sections = ("export",)
    inputs = ("compress",)
    families = ("translation",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        raise StageError("the translation export stage is not built yet")
