"""The Stage interface (`base`) and what several families' stages share; each family lists its own stages
(`TaskFamily.stages`, in `tlc_export/tasks/<family>/stages/`)."""

from __future__ import annotations

from tlc_export.stages.base import Stage, StageContext

__all__ = ["Stage", "StageContext"]
