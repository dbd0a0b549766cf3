"""The runner's cache keys, skipping, invalidation and resume, with small real stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tlc_export import runner
from tlc_export.recipe import parse_recipe
from tlc_export.rundir import RunDir
from tlc_export.stages.base import Stage, StageContext
from tlc_export.tasks.classification.family import ClassificationFamily

RECIPE = """\
models: {{sizes: [{{layers: 1, hidden: 64}}]}}
pretrain: {{time_budget_s: {budget}}}
finetune: {{lr: {lr}}}
"""


class CountingStage(Stage):
    """Writes one file and counts its runs; can be told to fail once."""

    calls: dict[str, int] = {}
    fail_once: set[str] = set()

    def run(self, ctx: StageContext) -> dict[str, Any]:
        CountingStage.calls[self.name] = CountingStage.calls.get(self.name, 0) + 1
        marker = ctx.out_dir / "partial.txt"
        resumed = marker.exists()
        marker.write_text("started")
        if self.name in CountingStage.fail_once:
            CountingStage.fail_once.discard(self.name)
            raise RuntimeError("boom")
        (ctx.out_dir / "out.txt").write_text(ctx.recipe.model_dump_json())
        return {"file": f"{self.name}/out.txt", "resumed": resumed}


class Pre(CountingStage):
    name = "pretrain"
    sections = ("pretrain",)


class Fin(CountingStage):
    name = "finetune"
    sections = ("finetune",)
    inputs = ("pretrain",)


@pytest.fixture(autouse=True)
def _stages(monkeypatch: pytest.MonkeyPatch) -> None:
    CountingStage.calls = {}
    CountingStage.fail_once = set()
    # The classification family's pipeline, as the runner asks for it.
    monkeypatch.setattr(ClassificationFamily, "stages", lambda self: [Pre(), Fin()])


def _recipe(budget: float = 5, lr: float = 1e-4):
    return parse_recipe(RECIPE.format(budget=budget, lr=lr))


def test_finished_stages_are_skipped(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(), rd)
    runner.run_pipeline(_recipe(), rd)
    assert CountingStage.calls == {"pretrain": 1, "finetune": 1}
    m = json.loads((tmp_path / "manifest.json").read_text())
    for name in ("pretrain", "finetune"):
        rec = m["stages"][name]
        assert rec["status"] == "done" and rec["cache_key"] and rec["finished_at"] >= rec["started_at"]
        assert rec["environment"]["torch"]
    assert (tmp_path / "recipe.resolved.yaml").exists()
    assert (tmp_path / "pretrain" / "recipe.resolved.yaml").exists()


def test_changing_upstream_reruns_downstream(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(budget=5), rd)
    (tmp_path / "pretrain" / "stale.txt").write_text("old")
    runner.run_pipeline(_recipe(budget=6), rd)
    assert CountingStage.calls == {"pretrain": 2, "finetune": 2}
    assert not (tmp_path / "pretrain" / "stale.txt").exists()  # a changed stage starts afresh


def test_changing_downstream_keeps_upstream(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(lr=1e-4), rd)
    runner.run_pipeline(_recipe(lr=2e-4), rd)
    assert CountingStage.calls == {"pretrain": 1, "finetune": 2}


def test_failed_stage_resumes_with_its_partial_work(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    CountingStage.fail_once = {"finetune"}
    with pytest.raises(Exception, match="boom"):
        runner.run_pipeline(_recipe(), rd)
    assert rd.record("finetune").status == "failed"
    assert rd.record("pretrain").status == "done"
    runner.run_pipeline(_recipe(), rd)
    rec = rd.record("finetune")
    assert rec.status == "done" and rec.outputs["resumed"] is True
    assert CountingStage.calls == {"pretrain": 1, "finetune": 2}


def test_only_needs_finished_inputs(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    with pytest.raises(Exception, match="not finished"):
        runner.run_pipeline(_recipe(), rd, only=["finetune"])
    runner.run_pipeline(_recipe(), rd)
    runner.run_pipeline(_recipe(), rd, only=["finetune"], force=["finetune"])
    assert CountingStage.calls == {"pretrain": 1, "finetune": 2}
