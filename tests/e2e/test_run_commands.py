"""Commands a user runs on a finished run must not damage it: `tlc export --formats` on a copy of the
tiny run (unknown and foreign formats refused before anything is written, the other formats' files kept,
bench and report marked stale until they run again), and `tlc status` / `tlc predict` on a run directory."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlc_export.cli import _check_formats, main
from tlc_export.errors import TlcError
from tlc_export.recipe import parse_recipe

pytestmark = pytest.mark.slow


def _text(result) -> str:
    return " ".join(result.output.split())


def _files(run: Path) -> dict[str, str]:
    """Every exported file's SHA-256, by path relative to the run."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run / "export").rglob("*.onnx"))}


@pytest.fixture
def run_copy(tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    assert tiny_run.exit_code == 0, tiny_run.output
    monkeypatch.setenv("TLC_HOME", str(tiny_run.home))
    dst = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, dst, symlinks=True)
    return dst


def test_export_formats_refuses_unknown_names_and_writes_nothing(run_copy: Path) -> None:
    before = (run_copy / "manifest.json").read_bytes(), _files(run_copy)
    r = CliRunner().invoke(main, ["export", str(run_copy), "--formats", "onnx-fp32,onnx-int9"])
    said = _text(r)
    assert r.exit_code == 1 and "unknown export format(s) 'onnx-int9'" in said
    assert "valid formats for this classification run: onnx-fp32, onnx-fp16, onnx-int8," in said
    assert ((run_copy / "manifest.json").read_bytes(), _files(run_copy)) == before


def test_export_formats_builds_only_what_it_names_and_marks_bench_and_report_stale(run_copy: Path) -> None:
    old_rows = json.loads((run_copy / "export" / "results.json").read_text())
    old_files = _files(run_copy)
    assert {r["format"] for r in old_rows} >= {"onnx-fp32", "onnx-int8", "onnx-int4"}

    r = CliRunner().invoke(main, ["export", str(run_copy), "--formats", "onnx-fp16"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = json.loads((run_copy / "export" / "results.json").read_text())
    key = lambda row: (row["variant"], row["format"])  # noqa: E731
    # every earlier row is still there, unchanged, and every earlier file byte for byte
    assert sorted(map(key, old_rows)) == sorted(key(x) for x in rows if x["format"] != "onnx-fp16")
    assert {key(x): x for x in rows if x["format"] != "onnx-fp16"} == {key(x): x for x in old_rows}
    new_files = _files(run_copy)
    assert {k: v for k, v in new_files.items() if k in old_files} == old_files
    fp16 = [x for x in rows if x["format"] == "onnx-fp16"]
    assert {x["variant"] for x in fp16} == {"1L-64H.s00.b32", "2L-64H.s00.b32"}
    assert all(x["status"] == "ok" and (run_copy / x["path"]).is_file() for x in fp16)

    status = CliRunner().invoke(main, ["status", str(run_copy)])
    lines = {line.split("\t")[0]: line.split("\t") for line in status.output.splitlines()}
    assert lines["bench"][1] == "stale" and lines["report"][1] == "stale" and lines["export"][1] == "done"
    assert lines["bench"][4].startswith("export re-ran (or is stale) after it ran")
    assert f"`tlc bench {run_copy}`" in lines["bench"][4]

    rep = CliRunner().invoke(main, ["report", str(run_copy)])
    assert rep.exit_code == 1 and "stage `bench` is stale: an input it read was re-run since" in _text(rep)
    pkg = CliRunner().invoke(main, ["package", str(run_copy), "--max-storage-mb", "10", "--out", str(run_copy.parent / "b")])
    assert pkg.exit_code == 1 and "the report is stale" in _text(pkg)
    assert f"run `tlc bench {run_copy}` then `tlc report {run_copy}`" in _text(pkg)
    assert not (run_copy.parent / "b").exists()

    for stage in ("bench", "report"):  # what the stale records say to run brings the run back
        res = CliRunner().invoke(main, [stage, str(run_copy)], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    again = CliRunner().invoke(main, ["status", str(run_copy)])
    assert "stale" not in again.output and again.output.count("\tdone\t") == 7
    bench = [json.loads(x) for x in (run_copy / "bench" / "results.jsonl").read_text().splitlines()]
    assert any(b.get("format") == "onnx-fp16" for b in bench)  # the new files were benchmarked


def test_status_says_n_a_for_the_other_familys_stages_and_predict_names_a_run_dir(tiny_run) -> None:
    r = CliRunner().invoke(main, ["status", str(tiny_run.run_dir)])
    assert r.exit_code == 0
    lines = {line.split("\t")[0]: line.split("\t") for line in r.output.splitlines()}
    assert lines["translation"][1] == "n/a" and lines["pretrain"][1] == "done"
    p = CliRunner().invoke(main, ["predict", str(tiny_run.run_dir), "a fine film"])
    said = _text(p)
    assert p.exit_code == 1 and "this is a run directory, not a bundle; package it first with `tlc package" in said
    assert "tlc.json: missing" not in said


def test_export_formats_the_family_lacks_are_refused(tmp_path: Path) -> None:
    mt = parse_recipe("translation:\n  data: {kind: tsv, path: p.tsv}\n  sizes: [{layers: 1, hidden: 32, heads: 2}]\n"
                      "  train: {time_budget_s: 1}\n", base_dir=tmp_path)
    with pytest.raises(TlcError, match=r"is a translation run, which has no onnx-fp16; its formats: onnx-fp32, "):
        _check_formats(mt, tmp_path, ["onnx-fp32", "onnx-fp16"])
    _check_formats(mt, tmp_path, ["onnx-int8"])  # one it has passes
