"""Sweep points share every stage whose cache key they have in common; cache hits are in the manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tlc_export import store
from tlc_export.cli import main
from tlc_export.stages.base import Stage, StageContext
from tlc_export.store import StageStore
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
  data.fraction: [1.0, 0.5]
"""


class Counting(Stage):
    calls: dict[str, list[str]] = {}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        Counting.calls.setdefault(self.name, []).append(ctx.run_dir.root.name)
        (ctx.out_dir / "out.txt").write_text(ctx.run_dir.root.name)
        return {"file": f"{self.name}/out.txt"}


class Data(Counting):
    name = "data"
    sections = ("data", "tokenizer")
    ignores = {"data": frozenset({"fraction"})}  # as the real data stage: pretraining applies it


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


def _plan():
    return parse_plan(RECIPE, file="shared.yaml")


def _manifest(point_dir: Path) -> dict[str, Any]:
    return json.loads((point_dir / "manifest.json").read_text())


def test_data_is_built_once_and_every_other_point_records_a_cache_hit(tmp_path: Path) -> None:
    sweep = _plan()
    outcomes = run_sweep(sweep, tmp_path / "run")
    assert [o.status for o in outcomes] == ["done"] * 4
    ids = [p.id for p in sweep.points]
    assert Counting.calls["data"] == [ids[0]]  # one data stage for batch sizes and fractions alike
    assert Counting.calls["pretrain"] == ids and Counting.calls["finetune"] == ids
    points = tmp_path / "run" / "points"
    first = _manifest(points / ids[0])["stages"]["data"]
    assert first["status"] == "done" and first["shared"]["hit"] is False and first["shared"]["built_by"] == ids[0]
    for pid in ids[1:]:
        rec = _manifest(points / pid)["stages"]["data"]
        assert rec["status"] == "done" and rec["shared"]["hit"] is True and rec["shared"]["built_by"] == ids[0]
        assert rec["cache_key"] == first["cache_key"]
        assert (points / pid / "data").is_symlink()
        assert (points / pid / "data").resolve() == (points / ids[0] / "data").resolve()
        assert _manifest(points / pid)["stages"]["pretrain"]["shared"]["hit"] is False
    assert (points / ids[3] / "data" / "out.txt").read_text() == ids[0]
    keys = {_manifest(points / pid)["stages"]["pretrain"]["cache_key"] for pid in ids}
    assert len(keys) == 4  # every point pretrains on its own

    again = run_sweep(sweep, tmp_path / "run")
    assert [o.status for o in again] == ["done"] * 4
    assert len(Counting.calls["data"]) == 1 and len(Counting.calls["pretrain"]) == 4  # nothing recomputed


def test_one_point_runs_alone_and_the_rest_reuse_it(tmp_path: Path) -> None:
    sweep = _plan()
    run_sweep(sweep, tmp_path / "run", points=[2])
    ids = [p.id for p in sweep.points]
    points = tmp_path / "run" / "points"
    assert sorted(p.name for p in points.iterdir()) == [ids[2]]
    assert Counting.calls == {"data": [ids[2]], "pretrain": [ids[2]], "finetune": [ids[2]]}
    assert json.loads((tmp_path / "run" / "sweep.json").read_text())["points"][2]["id"] == ids[2]
    run_sweep(sweep, tmp_path / "run")
    assert Counting.calls["data"] == [ids[2]]  # built by point 2, a cache hit for the others
    assert Counting.calls["pretrain"] == [ids[2], ids[0], ids[1], ids[3]]
    assert _manifest(points / ids[0])["stages"]["data"]["shared"]["built_by"] == ids[2]
    status = CliRunner().invoke(main, ["status", str(tmp_path / "run")])
    assert status.exit_code == 0 and "(shared)" in status.output and ids[3][:8] in status.output


def test_a_changed_point_gets_a_new_entry_and_the_old_one_stays(tmp_path: Path) -> None:
    run_sweep(_plan(), tmp_path / "run")
    changed = parse_plan(RECIPE.replace("time_budget_s: 5", "time_budget_s: 6"), file="shared.yaml")
    run_sweep(changed, tmp_path / "run")
    assert len(Counting.calls["data"]) == 1 and len(Counting.calls["pretrain"]) == 8
    entries = [p for p in (tmp_path / "run" / "stages" / "pretrain").iterdir() if p.is_dir()]
    assert len(entries) == 8  # the first plan's pretraining is still there for whoever needs it


def test_a_stale_lock_is_taken_over_and_a_busy_one_waited_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = StageStore(tmp_path / "stages")
    lock = tmp_path / "stages" / "data" / "k1.lock"
    lock.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout)}))
    with st.lock("data", "k1") as mine:
        assert mine and json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()

    monkeypatch.setattr(store, "POLL_S", 0.01)
    lock.write_text(json.dumps({"host": "another-node", "pid": 1}))
    messages: list[str] = []
    polls: list[int] = []

    def other_node_finishes_while_we_wait() -> bool:
        """The waiter's poll: on the third one the other node has published its entry (no thread, no timer)."""
        polls.append(1)
        if len(polls) == 3:
            st.entry("data", "k1").mkdir(parents=True)
            st.save_record("data", "k1", {"status": "done"})
        return st.done("data", "k1") is not None

    with st.lock("data", "k1", on_wait=messages.append, is_done=other_node_finishes_while_we_wait) as mine:
        assert mine is False  # built meanwhile by the other node: nothing to do
    assert len(polls) == 3  # it waited (polled) until the entry appeared, then stopped
    assert len(messages) == 1 and "another-node" in messages[0] and str(lock) in messages[0]
    assert lock.exists()  # not ours to remove


def test_data_prepare_builds_the_shared_data_stage_once_for_every_point(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("some text\n\nmore text\n")
    recipe = tmp_path / "sweep.yaml"
    recipe.write_text(RECIPE.replace("finetune: {}\n", "data: {sources: [{kind: text, path: corpus.txt}]}\n"))
    out = CliRunner().invoke(main, ["data", "prepare", str(recipe), "--run-dir", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    assert len(Counting.calls["data"]) == 1 and "pretrain" not in Counting.calls
    for point in (tmp_path / "run" / "points").iterdir():
        assert _manifest(point)["stages"]["data"]["status"] == "done"
    assert len(list((tmp_path / "run" / "points").iterdir())) == 4
