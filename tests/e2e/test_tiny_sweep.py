"""recipes/tiny/ablation-tiny.yaml end to end: two batch sizes × two data fractions, two sizes, kept
checkpoints finetuned and quantized. One point first (the parent report merges it alone), then the
rest, which reuse the shared data stage; the sweep report shows the overlaid curves, Figure 8,
Table 2 and the claims the sweep measures."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlc_export.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _tiny_data(folder: Path) -> None:
    spec = importlib.util.spec_from_file_location("tiny_data", ROOT / "scripts" / "tiny_data.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.write_tiny_data(folder)


def _manifest(point: Path) -> dict:
    return json.loads((point / "manifest.json").read_text())["stages"]


@pytest.mark.slow
def test_tiny_sweep_point_then_all_then_the_merged_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    recipe = tmp_path / "ablation-tiny.yaml"
    shutil.copy(ROOT / "recipes" / "tiny" / "ablation-tiny.yaml", recipe)
    _tiny_data(tmp_path / "data")
    run = tmp_path / "run"
    cli = CliRunner()

    one = cli.invoke(main, ["run", str(recipe), "--run-dir", str(run), "--point", "1"], catch_exceptions=False)
    assert one.exit_code == 0, one.output
    plan = json.loads((run / "sweep.json").read_text())
    ids = [p["id"] for p in plan["points"]]
    assert len(ids) == 4 and sorted(p.name for p in (run / "points").iterdir()) == [ids[1]]
    html = (run / "report" / "index.html").read_text()
    assert "1 of 4 point(s) have pretraining results" in html

    rest = cli.invoke(main, ["run", str(recipe), "--run-dir", str(run)], catch_exceptions=False)
    assert rest.exit_code == 0, rest.output
    assert rest.output.count("cache hit in the sweep's stage store") == 3  # data, for points 0, 2 and 3
    for pid in ids:
        stages = _manifest(run / "points" / pid)
        assert [s["status"] for s in stages.values()] == ["done"] * 4  # data, pretrain, finetune, compress
        assert stages["data"]["shared"]["built_by"] == ids[1]
        assert stages["data"]["shared"]["hit"] is (pid != ids[1])
        assert (run / "points" / pid / "pretrain" / "curves_flops.png").is_file()
    assert len([p for p in (run / "stages" / "data").iterdir() if p.is_dir()]) == 1
    assert len([p for p in (run / "stages" / "pretrain").iterdir() if p.is_dir()]) == 4

    # Each point: every size finetuned from its kept checkpoint and its final one, and quantized from both.
    point = run / "points" / ids[0]
    ft = json.loads((point / "finetune" / "results.json").read_text())
    assert ft["from"] == "every-kept" and [r["model"] for r in ft["models"]] == ["1L-32H", "2L-64H"]
    assert [r["model"] for r in ft["checkpoints"]] == ["1L-32H@k50", "2L-64H@k50"]
    assert ft["checkpoints"][0]["pretrained_from"]["path"] == "pretrain/1L-32H/kept/k50"
    assert set(ft["matched_perplexity"]["choices"]) == {"1L-32H", "2L-64H"}
    assert set(ft["matched_perplexity"]["first_evaluated"]) == {"1L-32H", "2L-64H"}
    extra = json.loads((point / "compress" / "checkpoints.json").read_text())
    assert {r["variant"] for r in extra} == {"1L-32H@k50.s00.b32", "1L-32H@k50.s00.b4", "2L-64H@k50.s00.b32",
                                             "2L-64H@k50.s00.b4"}
    main_rows = json.loads((point / "compress" / "results.json").read_text())
    assert not [r for r in (main_rows["variants"] if isinstance(main_rows, dict) else main_rows) if "@" in r["variant"]]
    pre = json.loads((run / "points" / ids[1] / "pretrain" / "results.json").read_text())
    assert pre["data_fraction"] == 0.5 and pre["train_documents"]["kept"] < pre["train_documents"]["of"]

    report = run / "report"
    html = (report / "index.html").read_text()
    assert "4 of 4 point(s) have pretraining results" in html
    for ident in ("curves-by-size", "curves-by-point", "fig8-plot"):
        assert f'id="{ident}"' in html, ident
    for png in ("sweep_curves_by_size.png", "sweep_curves_by_point.png", "sweep_fig8.png"):
        assert (report / png).stat().st_size > 10_000, png
    assert html.count("<table id='table2-") == 4 and "test acc % [95 %]" in html
    card = json.loads((report / "claims.json").read_text())
    assert [c["number"] for c in card["claims"]] == [6, 7]
    assert all(c["reason"] for c in card["claims"] if c["status"] == "not measured")
    md = (report / "summary.md").read_text()
    assert "Table 2" in md and "sweep_fig8.png" in md

    again = cli.invoke(main, ["report", str(run)], catch_exceptions=False)
    assert again.exit_code == 0 and "sweep report" in again.output
    status = cli.invoke(main, ["status", str(run)])
    assert status.exit_code == 0 and "(shared)" in status.output
