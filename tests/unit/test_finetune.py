"""Finetuning loop, batching and evaluation on a tiny learnable synthetic task."""

from __future__ import annotations

import copy

import pytest
import torch

from tlc_export.compress.quantize import QuantConfig, quantize_
from tlc_export.finetune import TrainSettings, encode_examples, evaluate_accuracy, finetune_
from tlc_export.finetune.batching import collate
from tlc_export.finetune.toy import toy_classifier, toy_examples, toy_tokenizer

MAX_LEN = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and OpenMP threads spin badly when the
    # machine is shared (measured: 40 s vs 7 s for the same 80 steps under load).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def data():
    return toy_examples(640, seed=1), toy_examples(200, seed=2)


@pytest.fixture(scope="module")
def trained(tok, data):
    train, dev = data
    model = toy_classifier(tok, layers=2, hidden=32)
    before = evaluate_accuracy(model, tok, dev, MAX_LEN)
    cfg = TrainSettings(lr=2e-3, batch_size=32, max_steps=80, max_length=MAX_LEN, eval_every_steps=20, seed=0)
    result = finetune_(model, cfg, tokenizer=tok, train=train, dev=dev)
    return model, result, before


def test_finetune_learns_task_well_above_chance(trained, tok, data):
    model, result, before = trained
    after = evaluate_accuracy(model, tok, data[1], MAX_LEN)
    assert before < 0.7  # random weights: near chance on a balanced task
    assert after >= 0.9
    # The model ends at its best dev checkpoint, and that is what the result reports.
    assert after == pytest.approx(result.best_dev_accuracy)
    assert result.steps == 80 and [h["step"] for h in result.history] == [20, 40, 60, 80]


def test_dynamic_padding_does_not_change_predictions(trained, tok, data):
    model, _, _ = trained
    enc = encode_examples(tok, data[1][:40], MAX_LEN)
    assert max(len(s) for s in enc.ids) <= MAX_LEN
    batch = collate(enc, list(range(40)))
    assert batch["input_ids"].shape[1] == max(len(s) for s in enc.ids)  # padded to the batch max only
    with torch.inference_mode():
        padded = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for i in (0, 7, 23):
            single = collate(enc, [i])
            alone = model(input_ids=single["input_ids"], attention_mask=single["attention_mask"]).logits
            torch.testing.assert_close(padded[i], alone[0], atol=1e-5, rtol=1e-4)


def test_truncation_respects_max_length(tok):
    long = toy_examples(5, seed=3, min_words=60, max_words=80)
    enc = encode_examples(tok, long, 16)
    assert all(len(s) == 16 for s in enc.ids)
    assert all(s[-1] == tok.eos_token_id for s in enc.ids)  # truncation keeps the closing </s>


def test_masks_keep_pruned_weights_exactly_zero_during_training(tok, data):
    model = toy_classifier(tok, seed=1)
    name = "roberta_prelayernorm.encoder.layer.0.intermediate.dense.weight"
    w = dict(model.named_parameters())[name]
    mask = torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    start = w.detach().clone()
    cfg = TrainSettings(lr=5e-3, batch_size=32, max_steps=15, max_length=MAX_LEN, eval_every_steps=5, weight_decay=0.1)
    finetune_(model, cfg, tokenizer=tok, train=data[0], dev=data[1][:50], masks={name: mask})
    w = dict(model.named_parameters())[name]
    assert torch.count_nonzero(w[~mask]) == 0
    assert (w[mask] != start[mask]).float().mean() > 0.9  # the kept weights did train


def test_stop_rule_at_start_takes_zero_steps(tok, data):
    model = toy_classifier(tok, seed=2)
    start = copy.deepcopy(model.state_dict())
    cfg = TrainSettings(lr=5e-3, batch_size=32, max_steps=50, max_length=MAX_LEN, eval_at_start=True)
    result = finetune_(model, cfg, tokenizer=tok, train=data[0], dev=data[1][:50], should_stop=lambda s, a: True)
    assert result.steps == 0 and result.stopped_early
    for k, v in model.state_dict().items():
        assert torch.equal(v, start[k])


def test_stop_rule_ends_training_when_target_reached(tok, data):
    model = toy_classifier(tok, seed=0)
    cfg = TrainSettings(lr=2e-3, batch_size=32, max_steps=200, max_length=MAX_LEN, eval_every_steps=10)
    result = finetune_(model, cfg, tokenizer=tok, train=data[0], dev=data[1], should_stop=lambda s, a: a >= 0.8)
    assert result.stopped_early and result.steps < 200
    assert result.history[-1]["dev_accuracy"] >= 0.8
    assert all(h["dev_accuracy"] < 0.8 for h in result.history[:-1])


def test_int8_fake_quant_is_within_one_point_of_fp32(trained, tok, data):
    model, _, _ = trained
    dev = toy_examples(400, seed=5)
    fp32 = evaluate_accuracy(model, tok, dev, MAX_LEN)
    q = copy.deepcopy(model)
    quantize_(q, QuantConfig(bits=8))
    int8 = evaluate_accuracy(q, tok, dev, MAX_LEN)
    assert abs(fp32 - int8) <= 0.01


def test_patience_ends_training_on_a_plateau_and_marks_it_converged(tok, data):
    """A task learned in ~60 steps, a cap of 400: two evaluations without a new best end it early."""
    model = toy_classifier(tok, layers=2, hidden=32)
    cfg = TrainSettings(lr=2e-3, batch_size=32, max_steps=400, max_length=MAX_LEN, eval_every_steps=20, patience=2)
    result = finetune_(model, cfg, tokenizer=tok, train=data[0], dev=data[1])
    accs = [h["dev_accuracy"] for h in result.history]
    assert result.stopped_early and result.steps < 400
    assert result.converged
    # The last two evaluations did not beat the best before them, and every earlier stretch improved in time.
    assert max(accs[-2:]) <= max(accs[:-2])
    assert result.best_dev_accuracy == max(accs) >= 0.9


def test_the_plateau_rule_waits_for_min_steps(tok, data):
    """This seed sits at chance for its first evaluations: without a floor, patience would end it there."""
    cfg = TrainSettings(lr=2e-3, batch_size=32, max_steps=400, max_length=MAX_LEN, eval_every_steps=10, patience=2)
    early = finetune_(toy_classifier(tok, seed=0), cfg, tokenizer=tok, train=data[0], dev=data[1])
    assert early.stopped_early and early.steps == 30 and early.best_dev_accuracy < 0.6
    cfg.min_steps = 60
    later = finetune_(toy_classifier(tok, seed=0), cfg, tokenizer=tok, train=data[0], dev=data[1])
    assert later.steps >= 60
    same = [(h["step"], h["dev_accuracy"]) for h in early.history]
    assert [(h["step"], h["dev_accuracy"]) for h in later.history[:3]] == same  # the same run until the floor


def test_from_finetune_sets_one_epoch_as_the_floor_of_the_plateau_rule():
    from tlc_export.config.finetune import FinetuneConfig

    cfg = FinetuneConfig(batch_size=32, epochs=4, patience=2)
    assert TrainSettings.from_finetune(cfg, 2400).min_steps == 75
    assert TrainSettings.from_finetune(FinetuneConfig(batch_size=32), 2400).min_steps == 0


def test_a_run_still_improving_at_its_cap_is_not_converged(tok, data):
    model = toy_classifier(tok, layers=2, hidden=32)
    cfg = TrainSettings(lr=2e-3, batch_size=32, max_steps=60, max_length=MAX_LEN, eval_every_steps=20, patience=2)
    result = finetune_(model, cfg, tokenizer=tok, train=data[0], dev=data[1])
    accs = [h["dev_accuracy"] for h in result.history]
    assert result.steps == 60 and not result.stopped_early
    assert accs[-1] == max(accs) > accs[0]  # still climbing when the cap ended it
    assert not result.converged and result.evals_since_best == 0


def test_evals_since_best_counts_from_the_first_best():
    from tlc_export.finetune.train import evals_since_best

    h = [{"dev_accuracy": a} for a in (0.5, 0.7, 0.6, 0.7, 0.65)]
    assert evals_since_best(h) == 3  # ties do not count as improvement
    assert evals_since_best([{"dev_accuracy": a} for a in (0.5, 0.6)]) == 0
    assert evals_since_best([]) == 0
