"""The compress stage on a tiny run directory: ladder × bits grid, artifacts, rows, error analysis."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from tlc_export.finetune import TrainSettings, evaluate_accuracy, finetune_, save_classifier
from tlc_export.finetune.toy import toy_classifier, toy_examples, toy_tokenizer
from tlc_export.recipe import parse_recipe
from tlc_export.rundir import RunDir
from tlc_export.stages.base import StageContext
from tlc_export.stages.compress import CompressStage

RECIPE = """
models: {sizes: [{layers: 2, hidden: 32}]}
pretrain: {time_budget_s: 1}
finetune:
  task: {kind: jsonl, path: task.jsonl, dev_fraction: 0.15, test_fraction: 0.15}
  lr: 0.002
  batch_size: 32
  max_length: 32
compress:
  quantize: {bits: [8, 4]}
  prune: {sparsity: [0.5, 0.75], step: 0.25, recovery_max_steps: 4, recovery_eval_every_steps: 2}
  analysis: {bits: 4, sparsity: 0.5}
"""
ROW_FIELDS = {
    "variant", "model", "params", "sparsity", "sparsity_reached", "bits", "granularity", "symmetric",
    "artifact", "storage_bytes", "packed_code_bytes", "nonzero_params", "nonzero_bits", "fp32_bytes",
    "dev_accuracy", "test_accuracy", "pruned_model_dir",
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_compress_stage_writes_every_variant(tmp_path):
    from tlc_export.compress.artifact import load_model
    from tlc_export.data import load_task

    with open(tmp_path / "task.jsonl", "w") as f:
        for e in toy_examples(600, seed=0):
            f.write(json.dumps({"text": e.text, "label": e.label}) + "\n")
    recipe = parse_recipe(RECIPE, base_dir=tmp_path)
    task = load_task(recipe.finetune.task, recipe)
    run = RunDir(tmp_path / "run")

    # A fake finetune stage output: a tiny classifier trained on the task.
    tok = toy_tokenizer()
    model = toy_classifier(tok, seed=0)
    finetune_(model, TrainSettings(lr=2e-3, batch_size=32, max_steps=60, max_length=32, eval_every_steps=20),
              tokenizer=tok, train=task.train, dev=task.dev)
    dev_acc = evaluate_accuracy(model, tok, task.dev, 32)
    assert dev_acc >= 0.85
    save_classifier(model, tok, run.stage_dir("finetune") / "2L-32H" / "model")
    (run.stage_dir("finetune") / "2L-32H" / "results.json").write_text(json.dumps({"dev_accuracy": dev_acc}))

    out = run.stage_dir("compress")
    out.mkdir(parents=True)
    buf = io.StringIO()
    ctx = StageContext(recipe=recipe, run_dir=run, out_dir=out, inputs={}, console=Console(file=buf, width=160))
    outputs = CompressStage().run(ctx)

    rows = json.loads((out / "results.json").read_text())
    assert outputs["variants"] == 9
    assert sorted(r["variant"] for r in rows) == sorted(
        f"2L-32H.s{s:02d}.b{b}" for s in (0, 50, 75) for b in (32, 8, 4)
    )
    by = {(round(r["sparsity"] * 100), r["bits"]): r for r in rows}
    for r in rows:
        assert ROW_FIELDS <= set(r), ROW_FIELDS - set(r)
        assert (run.root / r["artifact"]).is_file()
        assert abs(r["sparsity_reached"] - r["sparsity"]) <= 0.001
    # Storage strictly decreases with every added compression, along both axes.
    for s in (0, 50, 75):
        assert by[s, 32]["storage_bytes"] > by[s, 8]["storage_bytes"] > by[s, 4]["storage_bytes"]
    for b in (32, 8, 4):
        assert by[0, b]["storage_bytes"] > by[50, b]["storage_bytes"] > by[75, b]["storage_bytes"]

    # Dense fp32 is the finetuned model; 8-bit stays within a point of it.
    assert by[0, 32]["dev_accuracy"] == pytest.approx(dev_acc)
    assert abs(by[0, 8]["dev_accuracy"] - dev_acc) <= 0.01
    # The artifact on disk is the model that was scored.
    art = load_model(run.root / by[50, 4]["artifact"])
    assert evaluate_accuracy(art, tok, task.dev, 32) == pytest.approx(by[50, 4]["dev_accuracy"])
    assert (out / "2L-32H" / "pruned" / "s50" / "config.json").exists()

    errors = json.loads((out / "error_analysis.json").read_text())
    assert {e["model"] for e in errors} == {"2L-32H"} and (out / "error_analysis.png").stat().st_size > 0
    assert "2L-32H" in buf.getvalue()

    # Resume: nothing is rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "2L-32H" / "variants").glob("*.safetensors")}
    CompressStage().run(ctx)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
