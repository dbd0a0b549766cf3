"""Selection never reads test: flip every test label and nothing that dev decides may change.

Two runs of finetune → compress (→ the report's answers) on the same data, except that run B's test
labels are inverted. Anything chosen with test labels would choose differently in B: the lr grid holds
one candidate that learns the task (high test accuracy in A, so low in B) and one that cannot (near
chance in both), and the checkpoints of a candidate differ in test accuracy. So the chosen (lr, seed),
checkpoint, weights, recovery steps, artifacts and answer picks must all be identical, while every
reported test accuracy is mirrored (1 − A's), which shows test did change and is what gets reported.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from tlc_export.data.task import Example, split_examples
from tlc_export.finetune.toy import toy_examples, toy_mlm, toy_tokenizer
from tlc_export.recipe import parse_recipe
from tlc_export.report.answers import storage_answers, train_large_verdict
from tlc_export.rundir import RunDir
from tlc_export.stages.base import StageContext
from tlc_export.tasks.classification.family import ClassificationFamily
from tlc_export.tasks.classification.stages.compress import CompressStage
from tlc_export.tasks.classification.stages.finetune import FinetuneStage

RECIPE = """
models: {sizes: [{layers: 2, hidden: 32}, {layers: 2, hidden: 48}]}
pretrain: {time_budget_s: 1}
finetune:
  task: {kind: jsonl, path: task.jsonl, dev_fraction: 0.15, test_fraction: 0.15}
  lr: [0.00001, 0.003]
  seeds: [100]
  batch_size: 32
  epochs: 6
  max_length: 32
  eval_every_steps: 10
compress:
  quantize: {bits: [4]}
  prune: {sparsity: [0.5], step: 0.5, recovery_max_steps: 6, recovery_eval_every_steps: 2}
  analysis: {bits: 4, sparsity: 0.5}
"""
SIZES = ("2L-32H", "2L-48H")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _run(root: Path, flip_test: bool) -> dict:
    root.mkdir()
    examples = [Example(e.text, e.label) for e in toy_examples(600, seed=0)]
    _, _, test = split_examples(examples, 0.15, 0.15)  # the recipe's dev/test fractions
    test_texts = {e.text for e in test}
    with open(root / "task.jsonl", "w") as f:
        for e in examples:
            label = 1 - e.label if flip_test and e.text in test_texts else e.label
            f.write(json.dumps({"text": e.text, "label": label}) + "\n")
    recipe = parse_recipe(RECIPE, base_dir=root)
    run = RunDir(root / "run")
    tok = toy_tokenizer()
    for i, size in enumerate(SIZES):
        ckpt = run.stage_dir("pretrain") / size / "checkpoint"
        toy_mlm(tok, layers=2, hidden=(32, 48)[i], seed=i).save_pretrained(ckpt)
        tok.save_pretrained(ckpt)
    for stage in (FinetuneStage(), CompressStage()):
        out = run.stage_dir(stage.name)
        out.mkdir(parents=True)
        stage.run(StageContext(family=ClassificationFamily(), recipe=recipe, run_dir=run, out_dir=out, inputs={},
                               console=Console(file=io.StringIO(), width=200)))
    return {
        "finetune": {s: json.loads((run.stage_dir("finetune") / s / "results.json").read_text()) for s in SIZES},
        "variants": json.loads((run.stage_dir("compress") / "results.json").read_text()),
        "ladder": json.loads((run.stage_dir("compress") / "ladder.json").read_text()),
        "root": run.root,
    }


def test_flipping_every_test_label_changes_no_choice(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    a = _run(tmp_path / "a", flip_test=False)
    b = _run(tmp_path / "b", flip_test=True)
    for size in SIZES:
        fa, fb = a["finetune"][size], b["finetune"][size]
        # Precondition: a test-reading choice would differ. In A the chosen candidate learned the task
        # (so in B it scores ≤ 1 − 0.8 on test) while the tiny-lr candidate stays near chance.
        assert fa["lr"] == 0.003 and fa["test_accuracy"] >= 0.8
        assert (fb["lr"], fb["seed"], fb["best_step"]) == (fa["lr"], fa["seed"], fa["best_step"])
        assert fb["candidates"] == [{**c, "seconds": c2["seconds"]} for c, c2 in zip(fa["candidates"], fb["candidates"], strict=True)]
        assert fb["dev_accuracy"] == fa["dev_accuracy"]
        assert fb["test_accuracy"] == pytest.approx(1 - fa["test_accuracy"])  # test did change, and is reported
        wa = load_file(str(a["root"] / "finetune" / size / "model" / "model.safetensors"))
        wb = load_file(str(b["root"] / "finetune" / size / "model" / "model.safetensors"))
        assert wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)
    # Pruning recovery stops on dev: the same steps, the same levels, identical artifact tensors.
    strip = lambda lad: {s: [{k: v for k, v in r.items() if k != "recovery_seconds"} for r in rs] for s, rs in lad.items()}  # noqa: E731
    assert strip(a["ladder"]) == strip(b["ladder"])
    va = {r["variant"]: r for r in a["variants"]}
    vb = {r["variant"]: r for r in b["variants"]}
    assert va.keys() == vb.keys()
    for name, ra in va.items():
        rb = vb[name]
        assert rb["dev_accuracy"] == ra["dev_accuracy"] and rb["test_accuracy"] == pytest.approx(1 - ra["test_accuracy"])
        ta, tb = load_file(str(a["root"] / ra["artifact"])), load_file(str(b["root"] / rb["artifact"]))
        assert ta.keys() == tb.keys() and all(bool((ta[k] == tb[k]).all()) for k in ta)  # codes, grids, masks
    # The report's picks are made on dev too: the same variants are named in both runs.
    assert [x["variant"] for x in storage_answers(a["variants"], None)] == [x["variant"] for x in storage_answers(b["variants"], None)]
    assert train_large_verdict(a["variants"]).witness["variant"] == train_large_verdict(b["variants"]).witness["variant"]
