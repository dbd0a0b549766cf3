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

    for size in ("1L-64H", "2L-64H"):
        assert (run_dir / "pretrain" / size / "checkpoint" / "config.json").exists()
        assert (run_dir / "pretrain" / size / "curves.jsonl").read_text().strip()
        assert (run_dir / "finetune" / size / "model" / "config.json").exists()
    assert (run_dir / "pretrain" / "curves_wallclock.png").exists()

    finetuned = json.loads((run_dir / "finetune" / "results.json").read_text())["models"]
    for r in finetuned:
        assert (r["lr"], r["seed"]) == (2e-3, 100) and len(r["candidates"]) == 1
        assert (run_dir / r["predictions"]).is_file() and r["test_accuracy_ci"][0] <= r["test_accuracy"]
        assert isinstance(r["learned_task"], bool)

    variants = json.loads((run_dir / "compress" / "results.json").read_text())
    variants = variants["variants"] if isinstance(variants, dict) else variants
    names = {v["variant"] for v in variants}
    assert {"1L-64H.s00.b32", "1L-64H.s50.b4", "2L-64H.s00.b8", "2L-64H.s50.b32", "2L-64H.s50.b4.sym-g64"} <= names
    assert all((run_dir / v["predictions"]).is_file() for v in variants)  # every scored variant, for paired tests
    by_variant = {v["variant"]: v for v in variants}

    exported = json.loads((run_dir / "export" / "results.json").read_text())
    exported = exported["artifacts"] if isinstance(exported, dict) else exported
    ok = [e for e in exported if e["status"] == "ok"]
    assert {e["format"] for e in ok} >= {"onnx-fp32", "onnx-int8", "onnx-int8-dynamic", "onnx-int4"}
    trt = [e for e in exported if e["format"] == "tensorrt-int8"]
    assert trt and all(e["status"] in ("unavailable", "ok") for e in trt)
    # Every INT4 file is the 4-bit variant it names: its codes, its storage.
    int4 = [e for e in exported if e["format"] == "onnx-int4"]
    assert {e["variant"] for e in int4} == {n for n in names if ".s00.b4" in n}
    for e in int4:
        v = by_variant[e["variant"]]
        assert v["bits"] == 4 and e["codes"] == "compress" and e["storage_bytes"] == v["storage_bytes"]

    rows = [json.loads(line) for line in (run_dir / "bench" / "results.jsonl").read_text().splitlines()]
    ort_rows = [r for r in rows if r["backend"] == "onnxruntime" and r["status"] == "ok"]
    assert ort_rows and all(r["test_accuracy"] is not None and r.get("predictions") for r in ort_rows)
    html = (run_dir / "report" / "index.html").read_text()
    assert "1L-64H.s50.b4" in html
    verdict = html.split("id='verdict'", 1)[1].split("</p>", 1)[0]
    assert "test split (n = " in verdict and "McNemar" in verdict
    assert "chosen lr" in html and (run_dir / "report" / "summary.md").exists()
    # The reproduction card: written, at the top of the report, and printed at the end of `tlc run`.
    card = json.loads((run_dir / "report" / "claims.json").read_text())
    assert [c["number"] for c in card["claims"]] == [1, 2, 3, 4, 5, 6, 7]
    assert html.index("id='claims'") < html.index("id='verdict'")
    assert "Claims of the paper" in tiny_run.output

    again = CliRunner().invoke(main, ["run", str(recipe), "--run-dir", str(run_dir)], catch_exceptions=False)
    assert again.exit_code == 0
    assert again.output.count("up to date") == 7
    status = CliRunner().invoke(main, ["status", str(run_dir)])
    assert status.exit_code == 0 and "done" in status.output
