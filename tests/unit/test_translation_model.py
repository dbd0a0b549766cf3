"""Translation building blocks: label smoothing, BLEU/chrF, the Marian builder, batching and decoding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tlc_export.recipe import parse_recipe
from tlc_export.tasks.translation.batching import collate, encode_pairs, token_batches
from tlc_export.tasks.translation.data import ParallelPair
from tlc_export.tasks.translation.loss import IGNORE, label_smoothed_loss
from tlc_export.tasks.translation.metrics import score_translations

RECIPE = """\
translation:
  data: {kind: tsv, path: unused.tsv}
  tokenizer: {vocab_size: 300, min_frequency: 1, shared: %s}
  sizes: [{layers: 2, hidden: 32, decoder_layers: 1, heads: 2, ffn: 64}]
  max_source_length: 16
  max_target_length: 16
  dropout: 0.0
  train: {time_budget_s: 1}
  decoding: {strategy: greedy, max_length: 12, num_beams: 3}
"""

PAIRS = [ParallelPair(f"the {w} sees the {v} number {i}", f"le {w} voit le {v} numéro {i}", f"row {i}")
         for i, (w, v) in enumerate([("cat", "dog"), ("dog", "bird"), ("bird", "cat"), ("man", "woman"),
                                     ("woman", "child"), ("child", "man")] * 4)]


def _cfg(shared: bool = True):
    return parse_recipe(RECIPE % ("true" if shared else "false")).translation


# --- label smoothing ---------------------------------------------------------------------------


def _smoothed_reference(logits: np.ndarray, labels: np.ndarray, eps: float) -> tuple[float, float]:
    """−Σ q·log p with q = (1 − ε)·one-hot + ε/V, and the plain NLL, over non-ignored positions (float64)."""
    x = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    y = labels.reshape(-1)
    logp = x - (np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) + x.max(-1, keepdims=True))
    keep = y != IGNORE
    v = x.shape[-1]
    q = np.full((keep.sum(), v), eps / v)
    q[np.arange(keep.sum()), y[keep]] += 1 - eps
    return float(-(q * logp[keep]).sum()), float(-logp[keep, y[keep]].sum())


def test_label_smoothing_equals_the_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g) * 3
    labels = torch.randint(0, 11, (3, 5), generator=g)
    labels[0, 3:] = IGNORE
    labels[2, 1:] = IGNORE
    parts = label_smoothed_loss(logits, labels, 0.1)
    ref_smooth, ref_nll = _smoothed_reference(logits.numpy(), labels.numpy(), 0.1)
    assert parts.tokens.item() == 5 + 3 + 1
    assert parts.smoothed.item() == pytest.approx(ref_smooth, rel=1e-5)
    assert parts.nll.item() == pytest.approx(ref_nll, rel=1e-5)
    assert parts.smoothed.item() != pytest.approx(ref_nll, rel=1e-3)  # smoothing changed the loss
    plain = label_smoothed_loss(logits, labels, 0.0)
    assert plain.smoothed.item() == pytest.approx(ref_nll, rel=1e-5)


# --- BLEU / chrF -------------------------------------------------------------------------------


def test_bleu_of_reference_against_itself_is_100():
    refs = ["In the beginning God created the heavens and the earth.", "Jesus wept.", "Hello, world!"]
    s = score_translations(refs, refs, bootstrap=1)
    assert s.bleu == pytest.approx(100.0) and s.chrf == pytest.approx(100.0)
    assert s.bleu_ci is None and s.n == 3


def test_bleu_matches_the_sacrebleu_command_line(tmp_path: Path):
    refs = ["Au commencement, Dieu créa les cieux et la terre.", "La terre était informe et vide.",
            "Jésus pleura.", "Heureux les pauvres en esprit, car le royaume des cieux est à eux!"]
    hyps = ["Au commencement Dieu a créé le ciel et la terre.", "La terre était vide et informe.",
            "Jésus a pleuré.", "Heureux les pauvres d'esprit, le royaume des cieux est à eux !"]
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    cli = Path(sys.executable).with_name("sacrebleu")
    out = subprocess.run([str(cli), str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"), "-m", "bleu", "chrf",
                          "-f", "json", "-w", "4"], capture_output=True, text=True, check=True).stdout
    cli_bleu, cli_chrf = json.loads(out)
    ours = score_translations(hyps, refs, bootstrap=1)
    assert 5 < ours.bleu < 95  # a pair that tests something
    assert ours.bleu == pytest.approx(cli_bleu["score"], abs=1e-4)
    assert ours.chrf == pytest.approx(cli_chrf["score"], abs=1e-4)
    assert ours.bleu_signature == cli_bleu["signature"] and "tok:13a" in ours.bleu_signature
    boot = score_translations(hyps, refs)
    assert boot.bleu == pytest.approx(ours.bleu) and "bs:1000" in boot.bleu_signature
    assert boot.bleu_ci[0] < boot.bleu_ci[1]


# --- model, batching, decoding -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers():
    from tlc_export.tasks.translation.tokenizer import train_tokenizers

    return train_tokenizers(PAIRS, _cfg().tokenizer)


def test_tokenizer_round_trips_and_ends_with_eos(tokenizers, tmp_path):
    from tlc_export.tasks.translation.tokenizer import EOS_ID, TranslationTokenizers

    ids = tokenizers.source("le chat voit, l'oiseau!")["input_ids"]
    assert ids[-1] == EOS_ID
    assert tokenizers.target.decode(ids, skip_special_tokens=True) == "le chat voit, l'oiseau!"
    tokenizers.save(tmp_path / "tok")
    again = TranslationTokenizers.load(tmp_path / "tok")
    assert again.shared and again.source("le chat")["input_ids"] == tokenizers.source("le chat")["input_ids"]


def test_shared_vocabulary_ties_one_table_and_separate_does_not(tokenizers, one_thread):
    from tlc_export.tasks import get_family
    from tlc_export.tasks.translation.model import build_translation_model

    cfg = _cfg()
    size = cfg.grid()[0]
    model = build_translation_model(size, cfg, len(tokenizers.source))
    m = model.model
    ptrs = {m.encoder.embed_tokens.weight.data_ptr(), m.decoder.embed_tokens.weight.data_ptr(),
            model.lm_head.weight.data_ptr(), m.shared.weight.data_ptr()}
    assert len(ptrs) == 1
    assert len(m.encoder.layers) == 2 and len(m.decoder.layers) == 1
    assert model.config.d_model == 32 and model.config.encoder_attention_heads == 2
    assert model.config.activation_function == "relu" and model.config.scale_embedding
    assert size.name == "2L1D-32H"
    sep = build_translation_model(size, _cfg(False), 300, 280)
    assert sep.model.encoder.embed_tokens.weight.shape[0] == 300
    assert sep.lm_head.weight.shape[0] == 280 == sep.model.decoder.embed_tokens.weight.shape[0]
    assert sep.lm_head.weight.data_ptr() != sep.model.decoder.embed_tokens.weight.data_ptr()
    # the same seed gives the same weights; the family builds the same model
    recipe = parse_recipe(RECIPE % "true")
    again = get_family("translation").build_model(recipe, size=size, source_vocab=len(tokenizers.source))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))


def test_token_batches_cover_every_pair_within_budget(tokenizers):
    cfg = _cfg()
    enc = encode_pairs(tokenizers, PAIRS, cfg.max_source_length, cfg.max_target_length)
    batches = token_batches(enc, 64, seed=3)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(PAIRS)))
    for b in batches:
        padded = len(b) * (max(len(enc.source[i]) for i in b) + max(len(enc.target[i]) for i in b))
        if len(b) > 1:  # one pair longer than the budget travels alone
            assert padded <= 64
    assert token_batches(enc, 64, seed=3) == batches and token_batches(enc, 64, seed=4) != batches
    batch = collate(enc, batches[0])
    row = batches[0][0]
    assert batch["labels"][0, : len(enc.target[row])].tolist() == enc.target[row]
    assert (batch["labels"][0, len(enc.target[row]):] == IGNORE).all()
    assert batch["attention_mask"][0].sum().item() == len(enc.source[row])


def test_family_loss_is_label_smoothed_per_token(tokenizers, one_thread):
    from tlc_export.tasks import get_family
    from tlc_export.tasks.translation.model import build_translation_model

    recipe = parse_recipe(RECIPE % "true")
    cfg = recipe.translation
    model = build_translation_model(cfg.grid()[0], cfg, len(tokenizers.source)).eval()
    enc = encode_pairs(tokenizers, PAIRS[:4], cfg.max_source_length, cfg.max_target_length)
    batch = collate(enc, [0, 1, 2, 3])
    loss = get_family("translation").loss(model, batch, recipe)
    logits = model(**batch).logits  # transformers shifts the labels behind the start token itself
    ref, _ = _smoothed_reference(logits.detach().numpy(), batch["labels"].numpy(), 0.1)
    assert loss.item() == pytest.approx(ref / (batch["labels"] != IGNORE).sum().item(), rel=1e-5)


def _manual_greedy(model, ids: list[int], max_length: int) -> list[int]:
    """Greedy decoding by hand: full forward passes (no cache), argmax, EOS forced at the last position."""
    from tlc_export.tasks.translation.tokenizer import EOS_ID, PAD_ID

    out = [PAD_ID]
    src = torch.tensor([ids])
    with torch.no_grad():
        while len(out) < max_length:
            logits = model(input_ids=src, attention_mask=torch.ones_like(src),
                           decoder_input_ids=torch.tensor([out])).logits[0, -1]
            nxt = EOS_ID if len(out) == max_length - 1 else int(logits.argmax())
            out.append(nxt)
            if nxt == EOS_ID:
                break
    return out


def test_greedy_translate_equals_a_hand_written_greedy_loop(tokenizers, one_thread):
    from tlc_export.tasks.translation.decode import translate
    from tlc_export.tasks.translation.model import build_translation_model

    cfg = _cfg()
    model = build_translation_model(cfg.grid()[0], cfg, len(tokenizers.source), seed=1).eval()
    sources = [p.source for p in PAIRS[:5]]
    got = translate(model, tokenizers, sources, cfg.decoding, max_source_length=cfg.max_source_length, batch_size=2)
    for src, hyp in zip(sources, got, strict=True):
        ids = _manual_greedy(model, tokenizers.source(src)["input_ids"], cfg.decoding.max_length)
        assert hyp == tokenizers.target.decode(ids, skip_special_tokens=True).strip()
    assert any(got)  # a random model still emits tokens
    model.train()
    beams = translate(model, tokenizers, sources, cfg.decoding, max_source_length=cfg.max_source_length,
                      strategy="beam", batch_size=2)
    assert model.training  # decoding ran in eval mode and put the mode back
    # Reference: plain transformers beam search, one unpadded sentence at a time, the recipe's beam settings.
    model.eval()
    with torch.no_grad():
        for src, hyp in zip(sources, beams, strict=True):
            ids = torch.tensor([tokenizers.source(src)["input_ids"]])
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=3, do_sample=False,
                                 max_length=cfg.decoding.max_length, length_penalty=cfg.decoding.length_penalty,
                                 early_stopping=True)
            assert hyp == tokenizers.target.decode(gen[0], skip_special_tokens=True).strip()
    assert beams != got  # the beam settings reached generate: some sentence differs from greedy


def test_step_plan_reaches_the_token_target_and_continues_from_a_position(tokenizers):
    from tlc_export.tasks.translation.train import StepPlan

    cfg = _cfg()
    enc = encode_pairs(tokenizers, PAIRS, cfg.max_source_length, cfg.max_target_length)
    plan = StepPlan(enc, micro_tokens=64, step_tokens=100, seed=2)
    pos, seen = 0, []
    for _ in range(3 * plan.per_epoch):  # several epochs: every pair once per epoch, reshuffled
        micro, nxt = plan.next_step(pos)
        tokens = sum(enc.tokens(i) for idx in micro for i in idx)
        assert tokens >= 100 and tokens - sum(enc.tokens(i) for i in micro[-1]) < 100  # stops once reached
        assert nxt == pos + len(micro)
        seen.extend(micro)
        pos = nxt
    epoch0 = sorted(i for idx in seen[: plan.per_epoch] for i in idx)
    assert epoch0 == list(range(len(PAIRS)))
    assert seen[: plan.per_epoch] != seen[plan.per_epoch: 2 * plan.per_epoch]  # a new order each epoch
    fresh = StepPlan(enc, micro_tokens=64, step_tokens=100, seed=2)  # a resumed run: same steps from a position
    assert fresh.next_step(plan.per_epoch + 1) == plan.next_step(plan.per_epoch + 1)


def test_paired_comparison_of_two_systems():
    from sacrebleu.metrics import BLEU

    from tlc_export.tasks.translation.metrics import compare_translations, sentence_statistics

    rng = np.random.default_rng(0)
    words = ["le", "chat", "chien", "voit", "aime", "la", "maison", "grande", "petite", "rouge"]
    refs = [" ".join(rng.choice(words, size=8)) for _ in range(60)]
    good = [" ".join(r.split()[:-1]) for r in refs]  # drops one word
    bad = [" ".join(rng.choice(words, size=8)) for _ in refs]
    stats = sentence_statistics(good, refs)
    assert stats.shape == (60, 10)
    c = compare_translations(good, bad, refs, samples=300)
    assert c.bleu_a == pytest.approx(BLEU(tokenize="13a").corpus_score(good, [refs]).score)
    assert c.bleu_b == pytest.approx(BLEU(tokenize="13a").corpus_score(bad, [refs]).score)
    assert c.outcome == "won" and c.diff_ci_low > 0 and c.p_value < 0.05
    assert compare_translations(bad, good, refs, samples=300).outcome == "lost"
    same = compare_translations(good, good, refs, samples=100)
    assert same.outcome == "within noise" and same.diff == 0


def test_vectorised_bleu_equals_sacrebleu_corpus_bleu_on_resamples():
    """The bootstrap's batched BLEU against sacrebleu's own corpus_score of the same resampled sentences,
    including degenerate systems (empty output, one word, no 4-grams, perfect)."""
    from sacrebleu.metrics import BLEU

    from tlc_export.tasks.translation.metrics import bleu_from_statistics_batch, sentence_statistics

    rng = np.random.default_rng(1)
    words = ["le", "chat", "chien", "voit", "aime", "la", "maison", "grande", "petite", "rouge", "et", "il"]
    refs = [" ".join(rng.choice(words, size=int(rng.integers(3, 12)))) for _ in range(40)]
    systems = {
        "noisy": [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in refs],
        "empty": [""] * len(refs),
        "one word": ["le"] * len(refs),
        "three words": [" ".join(r.split()[:3]) for r in refs],
        "perfect": list(refs),
    }
    bleu = BLEU(tokenize="13a")
    for name, hyps in systems.items():
        stats = sentence_statistics(hyps, refs)
        picks = [rng.integers(0, len(refs), size=len(refs)) for _ in range(5)] + [np.arange(len(refs))]
        got = bleu_from_statistics_batch(np.stack([stats[i].sum(0) for i in picks]))
        want = [bleu.corpus_score([hyps[j] for j in i], [[refs[j] for j in i]]).score for i in picks]
        assert got == pytest.approx(want, abs=1e-9), name


def test_a_model_not_above_copying_the_source_did_not_learn_the_task():
    """Translation's majority class: the source given as its translation. Copying itself (and anything no
    better) is flagged; translations close to the references are not."""
    from sacrebleu.metrics import BLEU

    from tlc_export.tasks import get_family
    from tlc_export.tasks.translation.metrics import TranslationPredictions

    rng = np.random.default_rng(2)
    en = ["the", "cat", "dog", "sees", "loves", "house", "big", "small", "red", "Moses", "Israel"]
    fr = {"the": "le", "cat": "chat", "dog": "chien", "sees": "voit", "loves": "aime", "house": "maison",
          "big": "grand", "small": "petit", "red": "rouge", "Moses": "Moïse", "Israel": "Israël"}
    sources = [" ".join(rng.choice(en, size=8)) for _ in range(80)]
    refs = [" ".join(fr[w] for w in s.split()) for s in sources]
    close = [" ".join(r.split()[:-1]) for r in refs]
    family = get_family("translation")
    fields = family.row_fields({"test": TranslationPredictions(sources, refs, close)})
    assert fields["copy_baseline_bleu"] == pytest.approx(BLEU(tokenize="13a").corpus_score(sources, [refs]).score)
    assert fields["learned_task"] is True
    copying = family.row_fields({"test": TranslationPredictions(sources, refs, list(sources))})
    assert copying["learned_task"] is False
    # dev alone carries no baseline (it selects; the flag is the report split's, as for classification)
    assert "learned_task" not in family.row_fields({"dev": TranslationPredictions(sources, refs, close)})
