"""`compress` stage of the translation family (placeholder: being built)."""

from __future__ import annotations

from typing import Any

from tlc_export.errors import StageError
from tlc_export.stages.base import Stage, StageContext


class TranslationCompressStage(Stage):
    name = "compress"
    sections = ("compress", "translation")
    inputs = ("translation",)
    families = ("translation",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        raise StageError("the translation compress stage is not built yet")
