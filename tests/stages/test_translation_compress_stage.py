"""`tlc run` of a micro translation recipe through compress: the ladder × bits grid on the trained size,
artifacts that are the scored models, rows as the contract says, resume variant by variant."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors import safe_open

from tlc_export.cli import main

LEXICON = {"cat": "chat", "dog": "chien", "bird": "oiseau", "man": "homme", "child": "enfant",
           "horse": "cheval", "king": "roi", "friend": "ami"}
VERBS = {"sees": "voit", "likes": "aime", "follows": "suit", "calls": "appelle"}

RECIPE = """\
name: micro-mt-compress
translation:
  data: {kind: tsv, path: pairs.tsv, dev_fraction: 0.1, test_fraction: 0.1, max_eval_pairs: 20}
  tokenizer: {vocab_size: 300, min_frequency: 1}
  sizes: [{layers: 1, hidden: 32, heads: 2, ffn: 64}]
  max_source_length: 16
  max_target_length: 16
  train: {time_budget_s: 1.5, batch_tokens: 256, lr: 0.003, eval_every_s: 1.0, checkpoint_every_s: 5,
          eval_sentences: 8, threads: 1}
  decoding: {strategy: beam, num_beams: 2, max_length: 16}
compress:
  quantize: {bits: [4]}
  prune: {sparsity: [0.5], step: 0.5, recovery_max_steps: 2, recovery_eval_every_steps: 1}
"""
CONTRACT_FIELDS = {
    "variant", "model", "params", "sparsity", "sparsity_reached", "bits", "granularity", "symmetric", "zero_point", "group_size",
    "grid", "artifact", "storage_bytes", "packed_code_bytes", "nonzero_params", "nonzero_bits", "fp32_bytes",
    "dev_bleu", "dev_bleu_ci", "test_bleu", "test_bleu_ci", "dev_chrf", "test_chrf", "dev_chrf_ci", "test_chrf_ci",
    "dev_n", "test_n", "bleu_signature", "chrf_signature", "interval_method", "decoding", "predictions",
    "pruned_model_dir",
}

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_pairs(path: Path, n: int = 300) -> None:
    rng = random.Random(0)
    nouns, verbs = list(LEXICON), list(VERBS)
    rows = ["en\tfr"]
    for _ in range(n):
        a, b, v = rng.choice(nouns), rng.choice(nouns), rng.choice(verbs)
        rows.append(f"the {a} {v} the {b}\tle {LEXICON[a]} {VERBS[v]} le {LEXICON[b]}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_translation_compress_stage(tmp_path, monkeypatch):
    from sacrebleu.metrics import BLEU

    from tlc_export.recipe import parse_recipe
    from tlc_export.tasks import get_family
    from tlc_export.tasks.translation.compress import load_translation_variant
    from tlc_export.tasks.translation.family import TranslationFamily
    from tlc_export.tasks.translation.tokenizer import TranslationTokenizers

    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    _write_pairs(tmp_path / "pairs.tsv")
    recipe_path = tmp_path / "mt.yaml"
    recipe_path.write_text(RECIPE)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(recipe_path), "--run-dir", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    trained = json.loads((run / "translation" / "results.json").read_text())["models"][0]
    rows = json.loads((run / "compress" / "results.json").read_text())
    assert [r["variant"] for r in rows] == ["1L-32H.s00.b32", "1L-32H.s00.b4", "1L-32H.s50.b32", "1L-32H.s50.b4"]
    by = {(round(r["sparsity"] * 100), r["bits"]): r for r in rows}
    for r in rows:
        assert CONTRACT_FIELDS <= set(r), CONTRACT_FIELDS - set(r)
        assert r["model"] == "1L-32H" and r["params"] == trained["params"] and r["grid"] is None
        assert r["decoding"] == "beam" and r["test_n"] == trained["test_n"]
        assert r["artifact"] == f"compress/1L-32H/variants/{r['variant']}.safetensors"
        assert r["predictions"] == f"compress/1L-32H/variants/{r['variant']}.predictions.json"
        with safe_open(str(run / r["artifact"]), framework="np") as f:
            assert not [k for k in f.keys() if "embed_positions" in k]
    assert by[0, 32]["pruned_model_dir"] == trained["checkpoint"]
    assert by[50, 4]["pruned_model_dir"] == "compress/1L-32H/pruned/s50"
    assert abs(by[50, 4]["sparsity_reached"] - 0.5) <= 0.001 and by[0, 4]["sparsity_reached"] == 0.0
    # s00.b32 is the trained checkpoint: the translation stage's scores.
    assert by[0, 32]["test_bleu"] == trained["test_bleu"] and by[0, 32]["dev_bleu"] == trained["dev_bleu"]
    # Storage drops along both axes.
    assert by[0, 32]["storage_bytes"] > by[0, 4]["storage_bytes"] and by[0, 32]["storage_bytes"] > by[50, 32]["storage_bytes"]
    assert by[50, 32]["storage_bytes"] > by[50, 4]["storage_bytes"]

    # The artifact is the scored model: decoding it again gives the stored hypotheses, whose BLEU is the row's.
    recipe = parse_recipe(RECIPE, base_dir=tmp_path)
    family = get_family("translation")
    data = family.read(recipe)
    tok = TranslationTokenizers.load(run / "translation" / "tokenizer")
    model = load_translation_variant(run / by[50, 4]["artifact"])
    again = family.predict(model, tok, {"test": data.test}, recipe)["test"]
    stored = json.loads((run / by[50, 4]["predictions"]).read_text())
    assert again.hypotheses == stored["test"]["hypotheses"]
    assert stored["test"]["references"] == [p.target for p in data.test]
    ref_bleu = BLEU(tokenize="13a").corpus_score(stored["test"]["hypotheses"], [stored["test"]["references"]]).score
    assert by[50, 4]["test_bleu"] == pytest.approx(ref_bleu, abs=1e-9)

    # … and it is the saved s50 level fake-quantized at 4 bits with its masks (the tied table once).
    import torch

    from tlc_export.compress.prune import load_masks
    from tlc_export.compress.quantize import QuantConfig
    from tlc_export.tasks.translation.compress import (
        load_translation_level_model,
        quantize_translation_,
    )

    level_model = load_translation_level_model(run / "compress" / "1L-32H" / "pruned" / "s50")
    masks = load_masks(run / "compress" / "1L-32H" / "pruned" / "s50" / "masks.safetensors")
    assert by[50, 4]["zero_point"] == "integer"  # the recipe's default grid
    quantize_translation_(level_model, QuantConfig(bits=4, integer_zero_point=True), masks=masks)
    scored = model.state_dict()
    assert all(torch.equal(v, scored[k]) for k, v in level_model.state_dict().items())
    pruned = ~masks["model.shared.weight"]
    assert pruned.any() and not scored["model.shared.weight"][pruned].any()

    ladder = json.loads((run / "compress" / "ladder.json").read_text())
    (level,) = ladder["1L-32H"]
    assert level["level"] == "s50" and level["recovery_steps"] <= 2 and level["history"][0]["step"] == 0
    assert level["decoding"] == "greedy" and level["dev_sentences"] == 8 and level["history"][0]["train_loss"] is None

    # Resume: the stage was interrupted after all but one variant's row was written (the manifest still
    # says running); the rerun redoes that variant only. (--force would start from scratch instead.)
    (run / "compress" / "1L-32H" / "variants" / "1L-32H.s50.b4.json").unlink()
    manifest_path = run / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["stages"]["compress"]["status"] = "running"
    manifest_path.write_text(json.dumps(manifest))
    calls = []
    real = TranslationFamily.predict

    def counting(self, *a, **kw):
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(TranslationFamily, "predict", counting)
    again_run = CliRunner().invoke(main, ["run", str(recipe_path), "--run-dir", str(run), "--until", "compress"],
                                   catch_exceptions=False)
    assert again_run.exit_code == 0, again_run.output
    assert len(calls) == 1
    assert json.loads((run / "compress" / "results.json").read_text()) == rows
