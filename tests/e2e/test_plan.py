"""`tlc plan` end to end on the micro recipe, with a step clock (budgets are step counts, nothing is timed):
pilots, plan.json, recipe.plan.yaml whose run resumes the pilots, and the backtest; bad input errors."""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tiny_recipe import RECIPE, _write_data

from tlc_export.atomic import read_jsonl
from tlc_export.cli import main
from tlc_export.report.plan_check import check_tables


class StepClock:
    def __init__(self, dt: float) -> None:
        self.t, self.dt = 0.0, dt

    def __call__(self) -> float:
        return self.t


def _step_clock(monkeypatch: pytest.MonkeyPatch, dt: float = 1 / 16) -> None:
    import tlc_export.pretrain.loop as loop

    fake = StepClock(dt)

    class TimedStep(loop.TrainStep):
        def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
            fake.t += fake.dt
            return super().__call__(*args, **kwargs)

    monkeypatch.setattr(loop, "clock", fake)
    monkeypatch.setattr(loop, "TrainStep", TimedStep)


def test_plan_pilots_resume_into_the_full_run_and_backtest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_data(tmp_path)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    _step_clock(monkeypatch)
    out = tmp_path / "plan"
    res = CliRunner().invoke(main, ["plan", str(recipe), "--budget-s", "6", "--pilot-fraction", "0.5",
                                    "--pilot-evals", "6", "--backend", "torch-eager", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    plan = json.loads((out / "plan.json").read_text())
    assert [s["size"] for s in plan["sizes"]] == ["1L-64H", "2L-64H"]
    for s in plan["sizes"]:
        assert s["pilot"]["steps"] == 48 and s["pilot"]["elapsed_s"] == 3.0  # half of 6 s of 1/16 s steps
        assert len([p for p in s["curve"] if p["elapsed_s"] > 0]) == 6
        lo, hi = s["interval"]
        assert lo <= s["predicted_final_loss"] <= hi
        assert set(s["compression"]) == {"s00.b32", "s00.b8", "s00.b4", "s50.b32", "s50.b8", "s50.b4"}
        for c in s["compression"].values():
            assert c["storage_bytes"] == Path(c["artifact"]).stat().st_size
        assert s["compression"]["s00.b32"]["penalty"] == 0.0
        assert s["tokens_per_s"] > 0 and s["peak_memory_bytes"] > 0 and s["latency_ms"]["2"]["p50_ms"] > 0
        assert (out / "run" / "pretrain" / s["size"] / "state" / "trainer.json").exists()
    assert plan["cost"]["fraction_of_grid"] == pytest.approx(0.5)
    rec = plan["recommendation"]
    assert rec["best"]["variant"].split(".")[0] in {"1L-64H", "2L-64H"} and "distinguishable" in rec
    assert (out / "extrapolation.png").read_bytes()[:4] == b"\x89PNG"

    # The plan's recipe continues the pilots: same budget, the pilot's evaluation interval, the chosen size(s).
    plan_yaml = yaml.safe_load((out / "recipe.plan.yaml").read_text())
    assert plan_yaml["pretrain"]["time_budget_s"] == 6 and plan_yaml["pretrain"]["eval_every_s"] == 0.5
    chosen = [f"{s['layers']}L-{s['hidden']}H" for s in plan_yaml["models"]["sizes"]]
    assert rec["best"]["size"] in chosen
    res = CliRunner().invoke(main, ["run", str(out / "recipe.plan.yaml"), "--run-dir", str(out / "run"),
                                    "--until", "pretrain"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "resuming at step 48" in res.output
    for size in chosen:
        curve = read_jsonl(out / "run" / "pretrain" / size / "curves.jsonl")
        steps = [p["step"] for p in curve]
        assert steps == sorted(set(steps)) and steps[-1] == 96  # 6 s of 1/16 s steps, the pilot's 48 included
        assert not (out / "run" / "pretrain" / size / "state").exists()

    res = CliRunner().invoke(main, ["plan", "--check", str(out / "run"), "--plan", str(out / "plan.json")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    check = json.loads((out / "check.json").read_text())
    assert {r["size"] for r in check["sizes"]} == set(chosen)
    for r in check["sizes"]:
        assert r["error"] == pytest.approx(r["predicted"] - r["measured"])
    assert check["recommended"] == rec["best"]["variant"] and isinstance(check["recommendation_was_best"], bool)
    assert check["penalty"] and all(p["pilot_penalty"] - p["final_penalty"] == pytest.approx(p["error"])
                                    for p in check["penalty"])

    # The rest of the run made from the plan: its report shows the same comparison, in the same words.
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    assert (out / "run" / manifest["plan"]).resolve() == (out / "plan.json").resolve()
    res = CliRunner().invoke(main, ["run", str(out / "recipe.plan.yaml"), "--run-dir", str(out / "run")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = out / "run" / "report"
    record = json.loads((report / "plan_check.json").read_text())
    assert record["note"] is None and record["plan_sha256"] == hashlib.sha256((out / "plan.json").read_bytes()).hexdigest()
    got = record["comparison"]
    assert {k: v for k, v in got.items() if k != "run_dir"} == {k: v for k, v in check.items() if k != "run_dir"}
    summary, index = (report / "summary.md").read_text(), (report / "index.html").read_text()
    assert "## The plan against this run (`tlc plan --check`)" in summary and "id='plan-check'" in index
    for table in check_tables(check):
        assert table.title in summary and html.escape(table.title) in index
        for row in table.rows:
            assert "| " + " | ".join(row) + " |" in summary
            assert all(f"<td class='l'>{html.escape(cell)}</td>" in index for cell in row)
    assert check_tables(check)[0].caption in summary and html.escape(check_tables(check)[0].caption) in index
    outputs = json.loads((out / "run" / "manifest.json").read_text())["stages"]["report"]["outputs"]["plan_check"]
    assert outputs["inside"] == check["inside"] and outputs["recommendation_was_best"] == check["recommendation_was_best"]

    # An edited plan is not shown stale: its digest is in the report's key, so the report (alone) runs again.
    edited = json.loads((out / "plan.json").read_text())
    all_inside = check["inside"] < check["of"]  # the edit flips what the report must show
    for s in edited["sizes"]:
        s["interval"] = [0.0, 100.0] if all_inside else [-2.0, -1.0]
    (out / "plan.json").write_text(json.dumps(edited))
    res = CliRunner().invoke(main, ["run", str(out / "recipe.plan.yaml"), "--run-dir", str(out / "run")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    printed = " ".join(res.output.split())
    assert "report: configuration or inputs changed" in printed and "bench: up to date" in printed
    again = json.loads((report / "plan_check.json").read_text())
    assert again["plan_sha256"] == hashlib.sha256((out / "plan.json").read_bytes()).hexdigest()
    assert again["comparison"]["inside"] == (check["of"] if all_inside else 0)


@pytest.mark.parametrize(("args", "message"), [
    (["--budget-s", "2"], r"--budget-s 2: a 10% pilot is 0.2 s, .*raise --budget-s to at least 50"),
    (["--budget-s", "-1"], r"--budget-s -1: .*positive"),
    (["--budget-s", "60", "--pilot-fraction", "0.9"], r"--pilot-fraction 0.9: must be in \(0, 0.5\]"),
    (["--budget-s", "60", "--max-storage-mb", "0"], r"--max-storage-mb 0: a limit must be positive"),
    (["--budget-s", "60", "--latency-batch", "7"], r"--latency-batch 7: not among bench.batch_sizes \[2\]"),
])
def test_bad_input_is_refused_before_anything_runs(tmp_path: Path, args: list[str], message: str) -> None:
    _write_data(tmp_path)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    res = CliRunner().invoke(main, ["plan", str(recipe), "--out", str(tmp_path / "p"), *args])
    assert res.exit_code == 1
    import re

    assert re.search(message, " ".join(res.output.split())), res.output
    assert not (tmp_path / "p").exists()  # nothing half-done


def test_check_refuses_a_run_of_another_budget(tmp_path: Path) -> None:
    from tlc_export.plan.check import check_plan
    from tlc_export.plan.choose import PlanError

    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "results.json").write_text(json.dumps({"time_budget_s": 60, "models": []}))
    with pytest.raises(PlanError, match="the run's budget is 60 s, the plan's 600 s"):
        check_plan({"budget_s": 600, "sizes": [], "level": 0.9}, tmp_path)


def test_a_run_not_made_from_a_plan_has_no_plan_section_and_keeps_its_keys(tiny_run) -> None:
    from tlc_export.runner import cache_keys

    assert tiny_run.exit_code == 0, tiny_run.output
    manifest = json.loads((tiny_run.run_dir / "manifest.json").read_text())
    assert "plan" not in manifest and "plan_check" not in manifest["stages"]["report"]["outputs"]
    report = tiny_run.run_dir / "report"
    assert not (report / "plan_check.json").exists()
    assert "The plan against this run" not in (report / "summary.md").read_text()
    assert "plan-check" not in (report / "index.html").read_text()
    from tlc_export.rundir import RunDir

    rd = RunDir(tiny_run.run_dir)
    keys = cache_keys(rd.recipe(), run_dir=rd)
    assert keys == cache_keys(rd.recipe()) and keys["report"] == manifest["stages"]["report"]["cache_key"]
