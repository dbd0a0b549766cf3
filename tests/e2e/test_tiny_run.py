"""A whole `tlc run` on a micro recipe: local data, two tiny sizes, every stage, then a re-run that skips."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlc_export.cli import main

POS = ["great", "wonderful", "moving", "brilliant", "funny", "charming"]
NEG = ["awful", "boring", "dull", "clumsy", "tedious", "bland"]
FILLER = ["the", "film", "story", "actors", "plot", "music", "was", "really", "quite", "and", "a", "its"]


def _write_data(root: Path) -> None:
    rng = random.Random(0)
    docs = root / "corpus"
    docs.mkdir()
    for i in range(40):
        paras = []
        for _ in range(6):
            words = [rng.choice(FILLER + POS + NEG) for _ in range(rng.randint(12, 30))]
            paras.append(" ".join(words).capitalize() + ".")
        (docs / f"doc{i:02d}.txt").write_text("\n\n".join(paras))
    with open(root / "task.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(500):
            label = i % 2
            cue = rng.choice(POS if label else NEG)
            words = [rng.choice(FILLER) for _ in range(rng.randint(4, 10))]
            words.insert(rng.randrange(len(words) + 1), cue)
            w.writerow([" ".join(words), "pos" if label else "neg"])


RECIPE = """\
name: tiny
data:
  sources: [{kind: text, path: "corpus/*.txt"}]
  max_seq_len: 32
  val_fraction: 0.1
  min_val_documents: 4
tokenizer: {vocab_size: 400}
models:
  sizes:
    - {layers: 1, hidden: 64, heads: 2}
    - {layers: 2, hidden: 64, heads: 2}
pretrain:
  time_budget_s: 2
  batch_size: 8
  micro_batch_size: 4
  lr: 2.0e-3
  eval_every_s: 1
  eval_batches: 2
  checkpoint_every_s: 1
finetune:
  task: {kind: csv, path: task.csv}
  lr: 2.0e-3
  batch_size: 16
  epochs: 2
  max_length: 24
compress:
  quantize: {bits: [8, 4]}
  prune: {sparsity: [0.5], step: 0.5, recovery_max_steps: 4, recovery_eval_every_steps: 2}
  analysis: {bits: 4, sparsity: 0.5}
export:
  formats: [onnx-fp32, onnx-int8, onnx-int8-dynamic, onnx-int4, tensorrt-int8]
  sparsity: []
  calibration_samples: 8
  validation_samples: 8
  trt_max_seq_len: 32
bench:
  backends: [torch-eager, onnxruntime, tensorrt]
  batch_sizes: [2]
  seq_len: 16
  warmup: 1
  runs: 2
report: {}
"""


@pytest.mark.slow
def test_tiny_recipe_runs_every_stage_then_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    _write_data(tmp_path)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(recipe), "--run-dir", str(run_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output

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
    assert "Claims of the paper" in result.output

    again = CliRunner().invoke(main, ["run", str(recipe), "--run-dir", str(run_dir)], catch_exceptions=False)
    assert again.exit_code == 0
    assert again.output.count("up to date") == 7
    status = CliRunner().invoke(main, ["status", str(run_dir)])
    assert status.exit_code == 0 and "done" in status.output
