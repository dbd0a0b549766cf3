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
from tlc_export.tasks.classification.family import ClassificationFamily
from tlc_export.tasks.classification.stages.compress import CompressStage

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
    "variant", "model", "params", "sparsity", "sparsity_reached", "bits", "granularity", "symmetric", "zero_point",
    "artifact", "storage_bytes", "packed_code_bytes", "nonzero_params", "nonzero_bits", "fp32_bytes",
    "dev_accuracy", "test_accuracy", "pruned_model_dir",
    "dev_accuracy_ci", "test_accuracy_ci", "dev_n", "test_n", "majority_accuracy", "learned_task", "predictions",
    "grid", "group_size", "tensorrt_int4",
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_compress_stage_writes_every_variant(tmp_path, monkeypatch):
    import numpy as np

    import tlc_export.finetune.train as train_mod
    from tlc_export.compress.artifact import load_artifact, load_model
    from tlc_export.data import load_task
    from tlc_export.finetune import encode_examples
    from tlc_export.finetune.evaluate import predict_on_encoded
    from tlc_export.predictions import load_predictions

    with open(tmp_path / "task.jsonl", "w") as f:
        for e in toy_examples(600, seed=0):
            f.write(json.dumps({"text": e.text, "label": e.label}) + "\n")
    recipe = parse_recipe(RECIPE, base_dir=tmp_path)
    task = load_task(recipe.finetune.task, recipe)
    run = RunDir(tmp_path / "run")

    # A fake finetune stage output: a tiny classifier trained on the task, and the (lr, seed) dev chose.
    tok = toy_tokenizer()
    model = toy_classifier(tok, seed=0)
    finetune_(model, TrainSettings(lr=2e-3, batch_size=32, max_steps=60, max_length=32, eval_every_steps=20),
              tokenizer=tok, train=task.train, dev=task.dev)
    dev_acc = evaluate_accuracy(model, tok, task.dev, 32)
    assert dev_acc >= 0.85
    save_classifier(model, tok, run.stage_dir("finetune") / "2L-32H" / "model")
    (run.stage_dir("finetune") / "2L-32H" / "results.json").write_text(
        json.dumps({"dev_accuracy": dev_acc, "lr": 0.004, "seed": 7}))

    # Recovery trains at half the size's chosen lr, with its chosen seed (not the recipe's first ones).
    seen = []
    real = train_mod.finetune_

    def spy(model, cfg, **kw):
        seen.append((cfg.lr, cfg.seed))
        return real(model, cfg, **kw)

    monkeypatch.setattr(train_mod, "finetune_", spy)

    out = run.stage_dir("compress")
    out.mkdir(parents=True)
    buf = io.StringIO()
    ctx = StageContext(family=ClassificationFamily(), recipe=recipe, run_dir=run, out_dir=out, inputs={}, console=Console(file=buf, width=200))
    outputs = CompressStage().run(ctx)
    assert seen and set(seen) == {(0.002, 7)}

    rows = json.loads((out / "results.json").read_text())
    assert outputs["variants"] == 12
    assert sorted(r["variant"] for r in rows) == sorted(
        [f"2L-32H.s{s:02d}.b{b}" for s in (0, 50, 75) for b in (32, 8, 4)]
        + [f"2L-32H.s{s:02d}.b4.sym-g64" for s in (0, 50, 75)]
    )
    by = {(round(r["sparsity"] * 100), r["bits"], r["grid"]): r for r in rows}
    for r in rows:
        assert ROW_FIELDS <= set(r), ROW_FIELDS - set(r)
        assert (run.root / r["artifact"]).is_file()
        assert abs(r["sparsity_reached"] - r["sparsity"]) <= 0.001
        lo, hi = r["test_accuracy_ci"]
        assert lo < r["test_accuracy"] < hi and r["test_n"] == len(task.test) and r["dev_n"] == len(task.dev)
        assert r["learned_task"] is True  # the toy task is learnable; 0.5 is chance
    # Storage strictly decreases with every added compression, along both axes.
    for s in (0, 50, 75):
        assert by[s, 32, None]["storage_bytes"] > by[s, 8, None]["storage_bytes"] > by[s, 4, None]["storage_bytes"]
        assert by[s, 4, "sym-g64"]["storage_bytes"] < by[s, 8, None]["storage_bytes"]
    for b in (32, 8, 4):
        assert by[0, b, None]["storage_bytes"] > by[50, b, None]["storage_bytes"] > by[75, b, None]["storage_bytes"]

    # Dense fp32 is the finetuned model; 8-bit stays within a point of it.
    assert by[0, 32, None]["dev_accuracy"] == pytest.approx(dev_acc)
    assert abs(by[0, 8, None]["dev_accuracy"] - dev_acc) <= 0.01
    # The artifact on disk is the model that was scored, and its stored predictions are that model's.
    for key in ((50, 4, None), (75, 4, "sym-g64")):
        art = load_model(run.root / by[key]["artifact"])
        assert evaluate_accuracy(art, tok, task.dev, 32) == pytest.approx(by[key]["dev_accuracy"])
        preds = load_predictions(run.root / by[key]["predictions"])
        test_enc = encode_examples(tok, task.test, 32)
        np.testing.assert_array_equal(preds["test"].predicted, predict_on_encoded(art, test_enc))
        np.testing.assert_array_equal(preds["test"].labels, [e.label for e in task.test])
        assert preds["test"].accuracy == pytest.approx(by[key]["test_accuracy"])
    assert (out / "2L-32H" / "pruned" / "s50" / "config.json").exists()

    # The TensorRT variant: symmetric INT4 codes in blocks of 64 on weight matrices, 1-D parameters left in fp32.
    trt = by[0, 4, "sym-g64"]
    assert trt["tensorrt_int4"] and trt["symmetric"] and trt["group_size"] == 64 and trt["granularity"] == "block"
    assert not by[0, 4, None]["tensorrt_int4"]
    a = load_artifact(run.root / trt["artifact"])
    assert a.quantized and all(len(q.shape) == 2 and q.symmetric and q.group_size == 64 and q.granularity == "block"
                               and int(q.codes.abs().max()) <= 7 for q in a.quantized.values())
    assert any(n.endswith("LayerNorm.weight") for n in a.dense)

    errors = json.loads((out / "error_analysis.json").read_text())
    assert {e["model"] for e in errors} == {"2L-32H"} and (out / "error_analysis.png").stat().st_size > 0
    assert "2L-32H" in buf.getvalue() and "test acc [95 %]" in buf.getvalue()

    # Resume: nothing is rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "2L-32H" / "variants").glob("*.safetensors")}
    CompressStage().run(ctx)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
