"""The one Stage interface every pipeline step implements."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from tlc_export import __version__
from tlc_export.recipe import Recipe
from tlc_export.rundir import RunDir, StageRecord
from tlc_export.tasks.base import TaskFamily


@dataclass
class StageContext:
    """What a stage gets when it runs."""

    recipe: Recipe
    run_dir: RunDir
    out_dir: Path  # this stage's own folder (exists, may hold partial work to resume from)
    inputs: dict[str, StageRecord]  # finished upstream stages, by name
    console: Console = field(default_factory=Console)
    options: dict[str, Any] = field(default_factory=dict)  # CLI overrides, e.g. export formats
    # The recipe's task family: the runner asks the registry once; stages call it, never look it up again.
    family: TaskFamily | None = None

    def input_dir(self, stage: str) -> Path:
        return self.run_dir.stage_dir(stage)


class Stage(ABC):
    """One step of the pipeline.

    A stage reads its recipe section(s) and the outputs of the stages named in `inputs`, writes only
    inside `ctx.out_dir`, and returns a JSON-serialisable dict of outputs (paths relative to the run
    directory, plus small metrics) that the runner records in the manifest.
    """

    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]]  # recipe sections this stage's cache key covers
    inputs: ClassVar[tuple[str, ...]] = ()
    # Fields of its sections a stage does not read (a later stage applies them), left out of its key.
    ignores: ClassVar[dict[str, frozenset[str]]] = {}
    # Every torchrun process takes part in a distributed stage (training); the others run on rank 0 only,
    # and the other ranks stop after the first distributed stage.
    distributed: ClassVar[bool] = False
    # CLI options that choose which part of the stage's work to (re)do inside its folder, not what it
    # computes (`tlc export --formats`): left out of the key, so using one never clears the folder.
    # The runner marks the stages after it stale instead.
    unkeyed_options: ClassVar[frozenset[str]] = frozenset()

    def enabled(self, recipe: Recipe) -> bool:
        """A stage of the recipe's family (`TaskFamily.stages`) runs when the recipe has its (first) section."""
        return getattr(recipe, self.sections[0], None) is not None

    def config_payload(self, recipe: Recipe, options: dict[str, Any] | None = None) -> dict[str, Any]:
        out = {}
        for s in self.sections:
            v = getattr(recipe, s)
            # Execution-only fields (e.g. data.workers) change speed, never results: not part of the key.
            skip: dict[str, Any] = dict.fromkeys([*getattr(type(v), "execution_only", ()), *self.ignores.get(s, ())], True)
            if v is not None and hasattr(v, "key_omitted"):  # e.g. pretrain.seeds at one seed: old keys stay valid
                omitted = v.key_omitted()  # field names, or {sub-section: field names} for nested ones
                skip |= omitted if isinstance(omitted, dict) else dict.fromkeys(omitted, True)
            out[s] = v.model_dump(mode="json", exclude=skip) if v is not None else None
        keyed = {k: v for k, v in (options or {}).items() if k not in self.unkeyed_options}
        if keyed:
            out["_options"] = keyed
        return out

    def keyed_facts(self, run_dir: RunDir) -> dict[str, Any]:
        """Facts of the run directory, beyond the recipe and the inputs, that change what the stage computes (the
        report stage: the digest of the plan that made the run). Keyed only when non-empty: a stage, or a run,
        without any keeps its key."""
        return {}

    def cache_key(self, recipe: Recipe, input_keys: dict[str, str], options: dict[str, Any] | None = None,
                  facts: dict[str, Any] | None = None) -> str:
        """hash(stage, config, inputs, code version[, keyed_facts])."""
        payload = {
            "stage": self.name,
            "config": self.config_payload(recipe, options),
            "inputs": input_keys,
            "version": __version__,
        }
        if facts:
            payload["facts"] = facts
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]

    @abstractmethod
    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Do the work; resume from partial files in ctx.out_dir where possible."""
