"""`tlc run` of a micro translation recipe: the translation stage trains every size for its budget and
scores dev and test with BLEU; a second run reuses everything."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlc_export.cli import main

LEXICON = {"cat": "chat", "dog": "chien", "bird": "oiseau", "man": "homme", "child": "enfant",
           "horse": "cheval", "king": "roi", "friend": "ami"}
VERBS = {"sees": "voit", "likes": "aime", "follows": "suit", "calls": "appelle"}

RECIPE = """\
name: micro-mt
translation:
  data: {kind: tsv, path: pairs.tsv, dev_fraction: 0.1, test_fraction: 0.1, max_eval_pairs: 24}
  tokenizer: {vocab_size: 300, min_frequency: 1}
  sizes: [{layers: 1, hidden: 32, heads: 2, ffn: 64}, {layers: 2, hidden: 48, heads: 2, ffn: 96}]
  max_source_length: 16
  max_target_length: 16
  train: {time_budget_s: 1.5, batch_tokens: 256, lr: 0.003, eval_every_s: 0.5, checkpoint_every_s: 0.5,
          eval_sentences: 8, threads: 1}
  decoding: {strategy: beam, num_beams: 2, max_length: 16}
"""


def _write_pairs(path: Path, n: int = 400) -> None:
    rng = random.Random(0)
    nouns, verbs = list(LEXICON), list(VERBS)
    rows = ["en\tfr"]
    for _ in range(n):
        a, b, v = rng.choice(nouns), rng.choice(nouns), rng.choice(verbs)
        rows.append(f"the {a} {v} the {b}\tle {LEXICON[a]} {VERBS[v]} le {LEXICON[b]}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.mark.slow
def test_micro_translation_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    _write_pairs(tmp_path / "pairs.tsv")
    recipe = tmp_path / "mt.yaml"
    recipe.write_text(RECIPE)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(recipe), "--run-dir", str(run_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not (run_dir / "data").exists() and not (run_dir / "pretrain").exists()  # the classification stages did not run
    res = json.loads((run_dir / "translation" / "results.json").read_text())
    assert [r["model"] for r in res["models"]] == ["1L-32H", "2L-48H"]
    assert res["data"]["split_rule"] == "stable hash of the source sentence"
    for r in res["models"]:
        assert r["elapsed_s"] >= 1.5 and r["steps"] > 0
        assert 0 <= r["test_bleu"] <= 100 and r["test_n"] == res["data"]["splits"]["test"]["pairs"]
        low, high = r["test_bleu_ci"]  # a dropped interval fails here
        assert 0 <= low <= high <= 100
        assert "tok:13a" in r["bleu_signature"]
        preds = json.loads((run_dir / r["predictions"]).read_text())
        assert len(preds["test"]["hypotheses"]) == r["test_n"] == len(preds["test"]["references"])
        points = [json.loads(line) for line in (run_dir / r["curves"]).read_text().splitlines()]
        assert points[0]["step"] == 0 and points[-1]["step"] == r["steps"] and points[-1]["dev_sentences"] == 8
    for png in ("curves_bleu_wallclock.png", "curves_bleu_steps.png", "curves_loss_wallclock.png"):
        assert (run_dir / "translation" / png).stat().st_size > 1000
    best = max(res["models"], key=lambda r: r["dev_bleu"])  # dev selects (first on ties)
    said = CliRunner().invoke(main, ["translate", str(run_dir), "the cat sees the dog", "the king follows the horse"],
                              catch_exceptions=False)
    assert said.exit_code == 0, said.output
    lines = said.output.strip().splitlines()
    assert lines[0].startswith(next(r["model"] for r in res["models"] if r["dev_bleu"] == best["dev_bleu"]))
    assert len(lines) == 3
    named = CliRunner().invoke(main, ["translate", str(run_dir), "x", "--model", "9L-9H"])
    assert named.exit_code == 1 and "1L-32H, 2L-48H" in named.output
    again = CliRunner().invoke(main, ["run", str(recipe), "--run-dir", str(run_dir)], catch_exceptions=False)
    assert again.exit_code == 0
    assert json.loads((run_dir / "translation" / "results.json").read_text()) == res  # a cache hit


@pytest.mark.slow
def test_hf_translation_run_streams_train_through_pair_files(tmp_path, monkeypatch):
    """A `kind: hf` recipe with `datasets.load_dataset` mocked (no hub): train is streamed (BPE and the pair
    files read it), dev/test are lists, empty rows are skipped and reported."""
    import sys
    import types

    rng = random.Random(1)
    nouns, verbs = list(LEXICON), list(VERBS)

    def rows(n: int) -> list[dict]:
        out = []
        for _ in range(n):
            a, b, v = rng.choice(nouns), rng.choice(nouns), rng.choice(verbs)
            out.append({"translation": {"en": f"the {a} {v} the {b}", "fr": f"le {LEXICON[a]} {VERBS[v]} le {LEXICON[b]}"}})
        return out

    splits = {"train": rows(300) + [{"translation": {"en": " ", "fr": "rien"}}], "validation": rows(20), "test": rows(20)}
    streamed: list[bool] = []

    def load_dataset(name, config=None, split=None, **kw):
        streamed.append(kw.get("streaming") is True)
        return iter(splits[split])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset, DatasetDict=dict))
    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    text = RECIPE.replace("data: {kind: tsv, path: pairs.tsv, dev_fraction: 0.1, test_fraction: 0.1, max_eval_pairs: 24}",
                          "data: {kind: hf, name: wmt/wmt14, config: fr-en, max_eval_pairs: 12}")
    text = text.replace(", {layers: 2, hidden: 48, heads: 2, ffn: 96}", "").replace("time_budget_s: 1.5", "time_budget_s: 0.5")
    assert "kind: hf" in text
    (tmp_path / "mt.yaml").write_text(text)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "mt.yaml"), "--run-dir", str(tmp_path / "run")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert streamed and all(streamed)
    out = tmp_path / "run" / "translation"
    data = json.loads((out / "data.json").read_text())
    assert data["streamed"] and data["splits"]["train"]["pairs"] == 300 and data["splits"]["train"]["skipped_empty"] == 1
    assert data["splits"]["dev"]["pairs"] == data["splits"]["test"]["pairs"] == 12
    header = json.loads((out / "pairs" / "train.json").read_text())
    assert header["pairs"] == 300 and json.loads((out / "results.json").read_text())["train_pairs"] == 300


PIPELINE = RECIPE.replace("decoding: {strategy: beam, num_beams: 2, max_length: 16}",
                          "decoding: {strategy: greedy, max_length: 16}").replace(
    "sizes: [{layers: 1, hidden: 32, heads: 2, ffn: 64}, {layers: 2, hidden: 48, heads: 2, ffn: 96}]",
    "sizes: [{layers: 2, hidden: 48, heads: 2, ffn: 96}]") + """\
compress:
  quantize: {bits: [8], tensorrt_int4_block: null}
  prune: {sparsity: [0.5], step: 0.5, recovery_max_steps: 2, recovery_eval_every_steps: 1}
export: {formats: [onnx-fp32, onnx-int8], sparsity: [], validation_samples: 4}
bench: {backends: [torch-eager, onnxruntime], batch_sizes: [1, 4], warmup: 0, runs: 1}
report: {}
"""


@pytest.mark.slow
def test_micro_translation_pipeline_from_training_to_a_bundle(tmp_path, monkeypatch):
    """translation → compress → export → bench → report, then `tlc package` and `tlc predict` on the
    bundle: the bundle's translation of a new sentence is plain transformers' greedy `generate` of the
    trained checkpoint (the fp32 file of the dense model)."""
    import torch
    from transformers import MarianMTModel

    from tlc_export.tasks.translation.tokenizer import TranslationTokenizers

    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    _write_pairs(tmp_path / "pairs.tsv")
    recipe = tmp_path / "mt.yaml"
    recipe.write_text(PIPELINE)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(recipe), "--run-dir", str(run_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    variants = json.loads((run_dir / "compress" / "results.json").read_text())
    assert sorted(r["variant"] for r in variants) == sorted(f"{m}.{s}.{b}" for m in ("2L-48H",)
                                                            for s in ("s00", "s50") for b in ("b32", "b8"))
    for m in ("2L-48H",):
        mine = {r["variant"]: r for r in variants if r["model"] == m}
        assert mine[f"{m}.s00.b8"]["storage_bytes"] < mine[f"{m}.s50.b32"]["storage_bytes"] < mine[f"{m}.s00.b32"]["storage_bytes"]
        for r in mine.values():
            low, high = r["test_bleu_ci"]  # every variant carries its interval
            assert low <= r["test_bleu"] + 1e-9 and low <= high
    exports = json.loads((run_dir / "export" / "results.json").read_text())
    assert {(r["variant"].split(".")[0], r["format"], r["status"]) for r in exports} == {
        (m, f, "ok") for m in ("2L-48H",) for f in ("onnx-fp32", "onnx-int8")}
    bench = [json.loads(line) for line in (run_dir / "bench" / "results.jsonl").read_text().splitlines()]
    timed = [b for b in bench if b.get("timed")]
    assert {b["batch_size"] for b in timed} == {1, 4} and all(b["sentences_per_s"] > 0 for b in timed)
    assert {b["backend"] for b in timed} == {"torch-eager", "onnxruntime"}
    html = (run_dir / "report" / "index.html").read_text()
    assert "BLEU" in html and "Figure 5" in html
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["report"]["status"] == "done"  # one size: the verdict says it cannot compare sizes

    bundle = tmp_path / "bundle"
    packed = CliRunner().invoke(main, ["package", str(run_dir), "--variant", "2L-48H.s00.b32", "--out", str(bundle)],
                                catch_exceptions=False)
    assert packed.exit_code == 0, packed.output
    text = "the king sees the friend"
    said = CliRunner().invoke(main, ["predict", str(bundle), text, "--jsonl"], catch_exceptions=False)
    assert said.exit_code == 0, said.output
    line = json.loads(said.output.strip().splitlines()[-1])
    tok = TranslationTokenizers.load(run_dir / "translation" / "tokenizer")
    model = MarianMTModel.from_pretrained(str(run_dir / "translation" / "2L-48H" / "checkpoint")).eval()
    enc = tok.source([text], return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(**enc, num_beams=1, do_sample=False, max_length=16)
    assert line["translation"] == tok.target.batch_decode(ids, skip_special_tokens=True)[0].strip()
