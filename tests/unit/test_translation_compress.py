"""Translation compression on a tiny Marian built in code: artifacts without the position tables that
reload the scored model, the tied table stored once, the pruning ladder's masks, recovery's stop rules."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors import safe_open

from tlc_export.compress.artifact import ArtifactError, save_artifact
from tlc_export.compress.masks import mask_sparsity
from tlc_export.compress.prune import MASKS_FILE, RECORD_FILE, load_masks, magnitude_masks, prune_
from tlc_export.compress.quantize import QuantConfig
from tlc_export.config.compress import PruneConfig
from tlc_export.recipe import parse_recipe
from tlc_export.tasks.translation import compress as C
from tlc_export.tasks.translation.batching import encode_pairs
from tlc_export.tasks.translation.data import ParallelPair
from tlc_export.tasks.translation.decode import translate
from tlc_export.tasks.translation.model import build_translation_model
from tlc_export.tasks.translation.train import DevSample

RECIPE = """\
translation:
  data: {kind: tsv, path: unused.tsv}
  tokenizer: {vocab_size: 300, min_frequency: 1}
  sizes: [{layers: 2, hidden: 32, decoder_layers: 1, heads: 2, ffn: 64}]
  max_source_length: 16
  max_target_length: 16
  dropout: 0.0
  train: {time_budget_s: 1, batch_tokens: 160, max_tokens_per_micro_batch: 96, lr: 0.003, eval_sentences: 6, threads: 1}
  decoding: {strategy: greedy, max_length: 12, batch_size: 8}
"""
WORDS = ["cat", "dog", "bird", "man", "woman", "child"]
PAIRS = [ParallelPair(f"the {a} sees the {b}", f"le {a} voit le {b}", f"{a}-{b}") for a in WORDS for b in WORDS]
POSITIONS = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    from tlc_export.tasks.translation.tokenizer import train_tokenizers

    cfg = parse_recipe(RECIPE).translation
    tok = train_tokenizers(PAIRS, cfg.tokenizer)
    train = encode_pairs(tok, PAIRS, cfg.max_source_length, cfg.max_target_length)
    return cfg, tok, train


def _model(cfg, tok, seed=0):
    return build_translation_model(cfg.grid()[0], cfg, len(tok.source), seed=seed).eval()


@pytest.fixture(scope="module")
def trained(setup):
    """A model trained for a moment (an untrained one only says `</s>`)."""
    from tlc_export.pretrain.step import make_optimizer
    from tlc_export.tasks.translation.train import StepPlan, train_step

    cfg, tok, train = setup
    torch.manual_seed(0)
    model = _model(cfg, tok).train()
    opt = make_optimizer(model, cfg.train, torch.device("cpu"))
    plan, position = StepPlan(train, 96, 160, 0), 0
    for _ in range(12):
        micro, position = plan.next_step(position)
        train_step(model, opt, train, micro, 3e-3, cfg, torch.device("cpu"), None)
    return model.eval()


def _logits(model, tok):
    ids = tok.source(["the cat sees the dog", "the child sees the man"], padding=True, return_tensors="pt")
    dec = torch.tensor([[0, 5, 9, 7], [0, 11, 4, 3]])
    with torch.no_grad():
        return model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"], decoder_input_ids=dec).logits


def _own_translations(model, tok, cfg, sources):
    """A dev sample whose references are the model's own greedy output: its dev BLEU is 100."""
    hyps = translate(model, tok, sources, cfg.decoding, max_source_length=cfg.max_source_length, strategy="greedy")
    assert all(hyps), "the reference trick needs non-empty translations"
    return DevSample(list(sources), hyps, encode_pairs(tok, [ParallelPair(s, h, "") for s, h in zip(sources, hyps, strict=True)], 16, 16))


def test_artifact_omits_position_tables_stores_tied_table_once_and_reloads_scored_model(setup, tmp_path):
    cfg, tok, _ = setup
    model = _model(cfg, tok)
    original_positions = {n: dict(model.named_parameters(remove_duplicate=False))[n].detach().clone() for n in POSITIONS}
    masks = magnitude_masks(model, 0.5, C.translation_prune_config(PruneConfig()))
    prune_(model, masks)
    q = C.quantize_translation_(model, QuantConfig(bits=4, granularity="per-channel"), masks=masks)
    expected = _logits(model, tok)

    path = tmp_path / "v.safetensors"
    report = C.save_translation_artifact(path, model, q, masks, meta={"variant": "2L1D-32H.s50.b4"})
    with safe_open(str(path), framework="np") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert not [k for k in keys if "embed_positions" in k]
    assert not [k for k in keys if k.startswith(("lm_head", "model.encoder.embed_tokens", "model.decoder.embed_tokens"))]
    assert "model.shared.weight::codes" in keys  # the one table, quantized and stored once
    assert set(json.loads(meta["recomputed"])) == set(POSITIONS)
    assert set(json.loads(meta["tied"]).values()) == {"model.shared.weight"}

    # Counted and charged: learned parameters only (independent count: requires_grad), tied table once.
    learned = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report.params == learned == C.learned_parameters(model)
    full = save_artifact(tmp_path / "with_positions.safetensors", model, q, masks, meta={})
    table_bytes = sum(original_positions[n].numel() * 4 for n in POSITIONS)
    # The tables' fp32 bytes leave the file; their small `recomputed` metadata entry stays.
    assert full.storage_bytes - report.storage_bytes > 0.9 * table_bytes
    assert report.fp32_bytes == 4 * learned

    with pytest.raises(ArtifactError, match="model.shared.weight"):  # a quantized table cannot be "recomputed"
        save_artifact(tmp_path / "bad.safetensors", model, q, masks, meta={}, recomputed={"model.shared.weight": "x"})
    assert not (tmp_path / "bad.safetensors").exists()

    loaded = C.load_translation_variant(path)
    assert not loaded.training
    torch.testing.assert_close(_logits(loaded, tok), expected, atol=1e-5, rtol=0)
    params = dict(loaded.named_parameters(remove_duplicate=False))
    for n in POSITIONS:
        assert torch.equal(params[n], original_positions[n])
    assert loaded.lm_head.weight.data_ptr() == loaded.model.shared.weight.data_ptr()
    pruned = ~masks["model.shared.weight"]
    assert pruned.any() and not loaded.model.shared.weight[pruned].any()  # the pruned zeros came back as zeros


def test_a_different_position_formula_is_refused(setup, tmp_path, monkeypatch):
    from transformers.models.marian import modeling_marian

    cfg, tok, _ = setup
    path = tmp_path / "v.safetensors"
    C.save_translation_artifact(path, _model(cfg, tok), None, None, meta={})
    real = modeling_marian.MarianSinusoidalPositionalEmbedding.create_weight
    # The same values, sin and cos interleaved instead of in halves (XLM's layout).
    monkeypatch.setattr(modeling_marian.MarianSinusoidalPositionalEmbedding, "create_weight",
                        lambda self: real(self)[:, torch.arange(self.weight.shape[1]).reshape(2, -1).T.reshape(-1)])
    with pytest.raises(ArtifactError, match="embed_positions"):
        C.load_translation_variant(path)


def test_ladder_masks_reach_sparsity_skip_fixed_tables_and_resume(setup, trained, tmp_path, monkeypatch):
    cfg, tok, train = setup
    dense = trained
    dev = _own_translations(dense, tok, cfg, [p.source for p in PAIRS[::9]])
    # The recipe asks for everything; positions and layer norms stay out anyway.
    pcfg = PruneConfig(sparsity=[0.3, 0.6], step=0.3, include=["*"], exclude=[], recovery_max_steps=0)
    model = copy.deepcopy(trained)
    recs = C.translation_ladder(model, pcfg, tokenizers=tok, train=train, dev=dev, translation=cfg,
                                out_dir=tmp_path, base_dev_bleu=100.0)
    assert [r["level"] for r in recs] == ["s30", "s60"]
    levels = {t: load_masks(tmp_path / t / MASKS_FILE) for t in ("s30", "s60")}
    for tag, want in (("s30", 0.3), ("s60", 0.6)):
        masks = levels[tag]
        assert abs(mask_sparsity(masks) - want) <= 0.001
        assert not [n for n in masks if any(part in n for part in ("embed_positions", "layer_norm"))]
        assert not [n for n in masks if n.endswith(".bias")]
        assert "model.shared.weight" in masks
        assert not {"lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"} & set(masks)
        saved = C.load_translation_level_model(tmp_path / tag)
        params = dict(saved.named_parameters(remove_duplicate=False))
        for n, m in masks.items():
            assert not params[n][~m].any(), n
        for n in POSITIONS:
            assert torch.equal(params[n], dict(dense.named_parameters(remove_duplicate=False))[n])
        assert params["lm_head.weight"].data_ptr() == params["model.shared.weight"].data_ptr()
    # Cumulative: what s30 pruned is still pruned at s60.
    for n, m in levels["s30"].items():
        assert not (levels["s60"][n] & ~m).any()

    # Resume: the finished s30 is loaded, only s60 is pruned and recovered again, to the same weights.
    first = C.load_translation_level_model(tmp_path / "s60").state_dict()
    import shutil

    shutil.rmtree(tmp_path / "s60")
    calls = []
    real = C.recover_translation_

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(C, "recover_translation_", spy)
    recs2 = C.translation_ladder(_model(cfg, tok, seed=99), pcfg, tokenizers=tok, train=train, dev=dev,
                                 translation=cfg, out_dir=tmp_path, base_dev_bleu=100.0)
    assert len(calls) == 1 and [r["level"] for r in recs2] == ["s30", "s60"]
    again = C.load_translation_level_model(tmp_path / "s60").state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert json.loads((tmp_path / "s60" / RECORD_FILE).read_text())["sparsity_reached"] == recs[1]["sparsity_reached"]


def test_recovery_takes_no_step_when_already_within_target(setup, trained):
    cfg, tok, train = setup
    model = copy.deepcopy(trained)
    masks = magnitude_masks(model, 0.3, C.translation_prune_config(PruneConfig()))
    prune_(model, masks)
    dev = _own_translations(model, tok, cfg, [p.source for p in PAIRS[::9]])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = C.recover_translation_(model, PruneConfig(recovery_max_steps=50), masks=masks, tokenizers=tok, train=train,
                               dev=dev, translation=cfg, base_dev_bleu=100.0)
    assert r.dev_bleu_before_recovery == pytest.approx(100.0)
    assert r.recovery_steps == 0 and r.recovered and [h["step"] for h in r.history] == [0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _scripted_bleu(monkeypatch, values):
    """Dev BLEU as scripted (the stop rule is under test here, not decoding)."""
    seq = iter(values)
    monkeypatch.setattr(C, "dev_sample_bleu", lambda *a, **kw: next(seq))


def _pruned(cfg, tok, sparsity):
    model = _model(cfg, tok)
    masks = magnitude_masks(model, sparsity, C.translation_prune_config(PruneConfig()))
    prune_(model, masks)
    return model, masks


def _dummy_dev(tok):
    return DevSample([p.source for p in PAIRS[:2]], [p.target for p in PAIRS[:2]], encode_pairs(tok, PAIRS[:2], 16, 16))


def test_recovery_stops_at_step_cap_with_masks_held(setup, monkeypatch):
    cfg, tok, train = setup
    model, masks = _pruned(cfg, tok, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _scripted_bleu(monkeypatch, [1.0, 2.0, 3.0])  # improving, never near 99.5
    pcfg = PruneConfig(recovery_max_steps=3, recovery_eval_every_steps=2, lr=1e-2)
    r = C.recover_translation_(model, pcfg, masks=masks, tokenizers=tok, train=train, dev=_dummy_dev(tok),
                               translation=cfg, base_dev_bleu=100.0)
    assert r.recovery_steps == 3 and not r.recovered and r.step_cap == 3
    assert [h["step"] for h in r.history] == [0, 2, 3] and r.dev_bleu == 3.0
    assert r.lr == 1e-2 and r.target_dev_bleu == pytest.approx(99.5)
    after = dict(model.named_parameters())
    for n, m in masks.items():
        assert not after[n][~m].any(), n  # pruned weights stayed exactly zero
        assert not torch.equal(after[n][m], before[n][m]), n  # kept weights trained
    for n in POSITIONS:
        assert torch.equal(before[n], model.state_dict()[n])


def test_recovery_stops_once_dev_reaches_target(setup, monkeypatch):
    cfg, tok, train = setup
    model, masks = _pruned(cfg, tok, 0.5)
    _scripted_bleu(monkeypatch, [10.0, 19.0, 19.95, 5.0])  # base 20: target 19.9, reached at the second check
    r = C.recover_translation_(model, PruneConfig(recovery_max_steps=100, recovery_max_epochs=10, recovery_eval_every_steps=2), masks=masks,
                               tokenizers=tok, train=train, dev=_dummy_dev(tok), translation=cfg, base_dev_bleu=20.0)
    assert r.recovery_steps == 4 and r.recovered and [h["step"] for h in r.history] == [0, 2, 4]


def test_recovery_keeps_the_best_dev_weights(setup, monkeypatch):
    cfg, tok, train = setup
    model, masks = _pruned(cfg, tok, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _scripted_bleu(monkeypatch, [5.0, 1.0, 2.0])  # training only made dev worse
    r = C.recover_translation_(model, PruneConfig(recovery_max_steps=2, recovery_eval_every_steps=1, lr=1e-2),
                               masks=masks, tokenizers=tok, train=train, dev=_dummy_dev(tok), translation=cfg,
                               base_dev_bleu=100.0)
    assert r.recovery_steps == 2 and r.dev_bleu == 5.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_step_cap_counts_epochs_of_tokens(setup):
    cfg, tok, train = setup
    tokens = sum(len(s) + len(t) for s, t in zip(train.source, train.target, strict=True))
    per_epoch = math.ceil(tokens / cfg.train.batch_tokens)
    assert C.recovery_step_cap(PruneConfig(recovery_max_epochs=2.0), train, cfg.train.batch_tokens) == 2 * per_epoch
    assert C.recovery_step_cap(PruneConfig(recovery_max_epochs=2.0, recovery_max_steps=1), train, cfg.train.batch_tokens) == 1
