"""A sweep's stage store: its entries are recorded and verified by `tlc verify PARENT`, and `--force` rebuilds an
entry from scratch (the old one moved aside until the new one is done)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tlc_export.cli import main
from tlc_export.stages.base import Stage, StageContext
from tlc_export.sweep.plan import parse_plan
from tlc_export.sweep.run import run_sweep
from tlc_export.tasks.classification.family import ClassificationFamily

RECIPE = """\
name: shared
models: {sizes: [{layers: 1, hidden: 32}]}
pretrain: {time_budget_s: 5, batch_size: 8}
finetune: {}
sweep:
  pretrain.batch_size: [8, 16]
"""


class Counting(Stage):
    calls: dict[str, int] = {}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        Counting.calls[self.name] = Counting.calls.get(self.name, 0) + 1
        (ctx.out_dir / "out.txt").write_text(f"{ctx.run_dir.root.name} run {Counting.calls[self.name]}")
        return {}


class Data(Counting):
    name = "data"
    sections = ("data", "tokenizer")


class Pre(Counting):
    name = "pretrain"
    sections = ("models", "pretrain", "data")
    inputs = ("data",)


class Fin(Counting):
    name = "finetune"
    sections = ("finetune",)
    inputs = ("pretrain",)


@pytest.fixture(autouse=True)
def _stages(monkeypatch: pytest.MonkeyPatch) -> None:
    Counting.calls = {}
    monkeypatch.setattr(ClassificationFamily, "stages", lambda self: [Data(), Pre(), Fin()])


def _text(result) -> str:
    return " ".join(result.output.split())


def test_verify_checks_the_store_and_force_rebuilds_an_entry(tmp_path: Path) -> None:
    sweep = parse_plan(RECIPE, file="shared.yaml")
    parent = tmp_path / "run"
    assert [o.status for o in run_sweep(sweep, parent)] == ["done", "done"]
    ok = CliRunner().invoke(main, ["verify", str(parent)])
    assert ok.exit_code == 0, ok.output
    entries = sorted((parent / "stages" / "pretrain").glob("*/out.txt"))
    assert len(entries) == 2  # one pretraining entry per batch size
    for entry in entries:
        rec = json.loads((entry.parent / "checksums.json").read_text())
        assert rec["files"]["out.txt"]["sha256"] == hashlib.sha256(entry.read_bytes()).hexdigest()
    assert (parent / "report" / "checksums.json").is_file()  # the sweep report is recorded too

    point0 = sweep.points[0]
    link = parent / "points" / point0.id / "pretrain"
    target = link.resolve() / "out.txt"
    target.write_text(target.read_text() + "!")
    bad = CliRunner().invoke(main, ["verify", str(parent)])
    assert bad.exit_code == 1
    assert f"corrupt {target}" in _text(bad) and "earliest stage to re-run is `pretrain`" in _text(bad)
    assert "--point 0 --force pretrain" in _text(bad)

    failed = run_sweep(sweep, parent, points=[0], force=["finetune"])  # point 0's finetune reads it
    assert failed[0].status == "failed" and "`pretrain` stage wrote" in failed[0].error
    assert Counting.calls["finetune"] == 2
    outcomes = run_sweep(sweep, parent, points=[0], force=["pretrain"])
    assert [o.status for o in outcomes] == ["done"]
    assert Counting.calls["pretrain"] == 3 and Counting.calls["finetune"] == 3  # finetune: its input re-ran
    assert not list(link.resolve().parent.glob(".*.replaced-*"))
    again = CliRunner().invoke(main, ["verify", str(parent)])
    assert again.exit_code == 0, again.output
