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
from tlc_export.tasks.classification.family import ClassificationFamily
from tlc_export.tasks.classification.stages.finetune import FinetuneStage

RECIPE = """
models: {sizes: [{layers: 2, hidden: 32}]}
pretrain: {time_budget_s: 1}
finetune:
  task: {kind: jsonl, path: task.jsonl, dev_fraction: 0.15, test_fraction: 0.15}
  lr: [0.00001, 0.002]
  seeds: [100]
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


def _context(tmp_path, recipe_text: str = RECIPE, task_seed: int = 0):
    write_task(tmp_path / "task.jsonl", seed=task_seed)
    recipe = parse_recipe(recipe_text, base_dir=tmp_path)
    run = RunDir(tmp_path / "run")
    tok = toy_tokenizer()
    ckpt = run.stage_dir("pretrain") / "2L-32H" / "checkpoint"
    toy_mlm(tok).save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    out = run.stage_dir("finetune")
    out.mkdir(parents=True)
    buf = io.StringIO()
    ctx = StageContext(family=ClassificationFamily(), recipe=recipe, run_dir=run, out_dir=out, inputs={}, console=Console(file=buf, width=200))
    return recipe, out, buf, ctx


def test_finetune_stage_chooses_lr_on_dev_saves_and_resumes(tmp_path):
    import numpy as np

    from tlc_export.data import load_task
    from tlc_export.finetune import encode_examples
    from tlc_export.finetune.evaluate import predict_on_encoded
    from tlc_export.predictions import load_predictions

    recipe, out, buf, ctx = _context(tmp_path)
    outputs = FinetuneStage().run(ctx)

    row = json.loads((out / "2L-32H" / "results.json").read_text())
    assert outputs["models"]["2L-32H"] == "finetune/2L-32H/model"
    # Both candidates trained and recorded; the tiny lr barely moves, so dev picks 0.002.
    cands = {(c["lr"], c["seed"]): c["dev_accuracy"] for c in row["candidates"]}
    assert set(cands) == {(0.00001, 100), (0.002, 100)}
    assert cands[0.002, 100] > cands[0.00001, 100]
    assert (row["lr"], row["seed"]) == (0.002, 100) and outputs["chosen"]["2L-32H"] == {"lr": 0.002, "seed": 100}
    assert row["dev_accuracy"] == pytest.approx(max(cands.values()))
    assert row["dev_accuracy"] >= 0.85 and row["test_accuracy"] >= 0.8  # chance is 0.5
    assert row["steps"] > 0 and 0 < row["best_step"] <= row["steps"]
    lo, hi = row["test_accuracy_ci"]
    assert lo < row["test_accuracy"] < hi and row["learned_task"] is True and row["above_majority_p"] < 0.05
    meta = json.loads((out / "results.json").read_text())
    assert meta["models"][0]["model"] == "2L-32H" and meta["selection_split"] == "dev" and meta["report_split"] == "test"
    assert set(meta["majority"]) == {"dev", "test"}
    log = buf.getvalue()
    assert "2L-32H" in log and "lr=1e-05,seed=100" in log and "chose lr 0.002" in log

    # The saved model is the best-dev one: reloading it reproduces the reported dev accuracy, and the
    # stored predictions are its predictions, aligned with the split's labels.
    task = load_task(recipe.finetune.task, recipe)
    model = load_classifier(out / "2L-32H" / "model")
    tok2 = load_tokenizer(out / "2L-32H" / "model")
    assert tok2("w001 good")["input_ids"][0] == tok2.bos_token_id
    assert evaluate_accuracy(model, tok2, task.dev, 32) == pytest.approx(row["dev_accuracy"])
    assert json.loads((out / "2L-32H" / "model" / "selection.json").read_text())["lr"] == 0.002
    preds = load_predictions(ctx.run_dir.root / row["predictions"])
    np.testing.assert_array_equal(preds["test"].predicted, predict_on_encoded(model, encode_examples(tok2, task.test, 32)))
    np.testing.assert_array_equal(preds["dev"].labels, [e.label for e in task.dev])

    # Resume: a finished size is skipped, not retrained.
    stamp = (out / "2L-32H" / "model" / "model.safetensors").stat().st_mtime_ns
    again = FinetuneStage().run(ctx)
    assert again["dev_accuracy"] == outputs["dev_accuracy"]
    assert (out / "2L-32H" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    # Interrupted after the grid (no row, no predictions yet): the recorded candidates are not retrained.
    (out / "2L-32H" / "results.json").unlink()
    (out / "2L-32H" / "predictions.npz").unlink()
    third = FinetuneStage().run(ctx)
    assert third["chosen"] == outputs["chosen"] and third["dev_accuracy"] == outputs["dev_accuracy"]
    assert (out / "2L-32H" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert "already trained" in buf.getvalue()


def test_a_model_that_predicts_the_majority_is_flagged(tmp_path):
    # Labels independent of the text (80 % one class): nothing to learn, so the classifier is not
    # significantly above always answering the majority label, and every output says so.
    import random

    rng = random.Random(1)
    recipe_text = RECIPE.replace("lr: [0.00001, 0.002]", "lr: 0.00001").replace("epochs: 4", "epochs: 1")
    recipe, out, buf, ctx = _context(tmp_path, recipe_text)
    rows = [json.loads(line) for line in (tmp_path / "task.jsonl").read_text().splitlines()]
    with open(tmp_path / "task.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({"text": r["text"], "label": "pos" if rng.random() < 0.8 else "neg"}) + "\n")
    outputs = FinetuneStage().run(ctx)
    row = json.loads((out / "2L-32H" / "results.json").read_text())
    assert row["learned_task"] is False and outputs["learned_task"] == {"2L-32H": False}
    assert row["majority_accuracy"] > 0.7
    assert "did not learn the task" in buf.getvalue()
