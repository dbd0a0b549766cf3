"""A whole `tlc run` on a micro recipe: local data, two tiny sizes, every stage, then a re-run that skips."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from tiny_recipe import FILLER, NEG, POS, RECIPE, _write_data  # noqa: F401 (test_torchrun imports them from here)

from tlc_export.cli import main


@pytest.mark.slow
def test_tiny_recipe_runs_every_stage_then_skips(tiny_run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLC_HOME", str(tiny_run.home))
    recipe, run_dir = tiny_run.recipe, tiny_run.run_dir
    assert tiny_run.exit_code == 0, tiny_run.output

    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = manifest["stages"]
    assert [s for s in stages] == ["data", "pretrain", "finetune", "compress", "export", "bench", "report"]
    assert all(s["status"] == "done" for s in stages.values())

    for size in ("1L-32H", "2L-64H"):
        assert (run_dir / "pretrain" / size / "checkpoint" / "config.json").exists()
        assert (run_dir / "pretrain" / size / "curves.jsonl").read_text().strip()
        assert (run_dir / "finetune" / size / "model" / "config.json").exists()
    assert (run_dir / "pretrain" / "curves_wallclock.png").exists()

    variants = json.loads((run_dir / "compress" / "results.json").read_text())
    variants = variants["variants"] if isinstance(variants, dict) else variants
    names = {v["variant"] for v in variants}
    assert {"1L-32H.s00.b32", "1L-32H.s50.b4", "2L-64H.s00.b8", "2L-64H.s50.b32"} <= names

    exported = json.loads((run_dir / "export" / "results.json").read_text())
    exported = exported["artifacts"] if isinstance(exported, dict) else exported
    ok = [e for e in exported if e["status"] == "ok"]
    assert {e["format"] for e in ok} >= {"onnx-fp32", "onnx-int8", "onnx-int8-dynamic", "onnx-int4"}
    trt = [e for e in exported if e["format"] == "tensorrt-int8"]
    assert trt and all(e["status"] in ("unavailable", "ok") for e in trt)

    rows = [json.loads(line) for line in (run_dir / "bench" / "results.jsonl").read_text().splitlines()]
    assert any(r["backend"] == "onnxruntime" and r["status"] == "ok" for r in rows)
    html = (run_dir / "report" / "index.html").read_text()
    assert "1L-32H.s50.b4" in html or "1L-32H" in html
    assert (run_dir / "report" / "summary.md").exists()
    # The reproduction card: written, at the top of the report, and printed at the end of `tlc run`.
    card = json.loads((run_dir / "report" / "claims.json").read_text())
    assert [c["number"] for c in card["claims"]] == [1, 2, 3, 4, 5]
    assert html.index("id='claims'") < html.index("id='verdict'")
    assert "Claims of the paper" in tiny_run.output

    again = CliRunner().invoke(main, ["run", str(recipe), "--run-dir", str(run_dir)], catch_exceptions=False)
    assert again.exit_code == 0
    assert again.output.count("up to date") == 7
    status = CliRunner().invoke(main, ["status", str(run_dir)])
    assert status.exit_code == 0 and "done" in status.output
