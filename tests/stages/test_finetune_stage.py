"""The finetune stage on a tiny run directory: a fake pretrain checkpoint in, a classifier out."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from tlc_export.finetune import evaluate_accuracy, load_classifier, load_tokenizer
from tlc_export.finetune.toy import toy_examples, toy_mlm, toy_tokenizer
from tlc_export.recipe import parse_recipe
from tlc_export.rundir import RunDir
from tlc_export.stages.base import StageContext
from tlc_export.stages.finetune import FinetuneStage

RECIPE = """
models: {sizes: [{layers: 2, hidden: 32}]}
pretrain: {time_budget_s: 1}
finetune:
  task: {kind: jsonl, path: task.jsonl, dev_fraction: 0.15, test_fraction: 0.15}
  lr: 0.002
  batch_size: 32
  epochs: 4
  max_length: 32
  eval_every_steps: 14
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def write_task(path, n: int = 600, seed: int = 0) -> None:
    with open(path, "w") as f:
        for e in toy_examples(n, seed=seed):
            f.write(json.dumps({"text": e.text, "label": ["neg", "pos"][e.label]}) + "\n")


def test_finetune_stage_trains_saves_and_resumes(tmp_path):
    write_task(tmp_path / "task.jsonl")
    recipe = parse_recipe(RECIPE, base_dir=tmp_path)
    run = RunDir(tmp_path / "run")
    tok = toy_tokenizer()
    ckpt = run.stage_dir("pretrain") / "2L-32H" / "checkpoint"
    toy_mlm(tok).save_pretrained(ckpt)
    tok.save_pretrained(ckpt)

    out = run.stage_dir("finetune")
    out.mkdir(parents=True)
    buf = io.StringIO()
    ctx = StageContext(recipe=recipe, run_dir=run, out_dir=out, inputs={}, console=Console(file=buf, width=120))
    outputs = FinetuneStage().run(ctx)

    row = json.loads((out / "2L-32H" / "results.json").read_text())
    assert outputs["models"]["2L-32H"] == "finetune/2L-32H/model"
    assert row["dev_accuracy"] >= 0.85 and row["test_accuracy"] >= 0.8  # chance is 0.5
    assert row["steps"] > 0 and 0 < row["best_step"] <= row["steps"]
    assert json.loads((out / "results.json").read_text())["models"][0]["model"] == "2L-32H"
    assert "2L-32H" in buf.getvalue()

    # The saved model is the best-dev one: reloading it reproduces the reported dev accuracy.
    from tlc_export.data import load_task

    task = load_task(recipe.finetune.task, recipe)
    model = load_classifier(out / "2L-32H" / "model")
    tok2 = load_tokenizer(out / "2L-32H" / "model")
    assert tok2("w001 good")["input_ids"][0] == tok2.bos_token_id
    assert evaluate_accuracy(model, tok2, task.dev, 32) == pytest.approx(row["dev_accuracy"])

    # Resume: a finished size is skipped, not retrained.
    stamp = (out / "2L-32H" / "model" / "model.safetensors").stat().st_mtime_ns
    again = FinetuneStage().run(ctx)
    assert again["dev_accuracy"] == outputs["dev_accuracy"]
    assert (out / "2L-32H" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
