"""`bench` stage of the translation family (placeholder: being built)."""

from __future__ import annotations

from typing import Any

from tlc_export.errors import StageError
from tlc_export.stages.base import Stage, StageContext


class TranslationBenchStage(Stage):
    name = "bench"
    sections = ("bench",)
    inputs = ("export",)
    families = ("translation",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        raise StageError("the translation bench stage is not built yet")
