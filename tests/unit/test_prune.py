"""Iterative magnitude pruning: exact sparsity, magnitude order, cumulative ladder, recovery rule."""

from __future__ import annotations

import json

import pytest
import torch

from tlc_export.compress.prune import (
    ladder_levels,
    load_level,
    magnitude_masks,
    make_permanent_,
    prunable_names,
    prune_,
    prune_ladder,
    recover_,
    run_ladder,
)
from tlc_export.config.compress import PruneConfig
from tlc_export.config.finetune import FinetuneConfig
from tlc_export.finetune import TrainSettings, evaluate_accuracy, finetune_
from tlc_export.finetune.toy import toy_classifier, toy_examples, toy_tokenizer

MAX_LEN = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; a second spinning OpenMP thread only hurts on a shared CPU
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


class Task:
    def __init__(self) -> None:
        self.train = toy_examples(480, seed=11)
        self.dev = toy_examples(160, seed=12)


@pytest.fixture(scope="module")
def task():
    return Task()


@pytest.fixture(scope="module")
def trained(tok, task):
    model = toy_classifier(tok, hidden=32, seed=3)
    cfg = TrainSettings(lr=2e-3, batch_size=32, max_steps=60, max_length=MAX_LEN, eval_every_steps=20)
    res = finetune_(model, cfg, tokenizer=tok, train=task.train, dev=task.dev)
    assert res.best_dev_accuracy >= 0.9, "the toy task should be learnt; pruning tests depend on it"
    return model, res.best_dev_accuracy


def _ft_cfg(**kw) -> FinetuneConfig:
    return FinetuneConfig(lr=2e-3, batch_size=32, max_length=MAX_LEN, **kw)


@pytest.mark.parametrize("scope", ["global", "per-layer"])
@pytest.mark.parametrize("sparsity", [0.15, 0.5, 0.9])
def test_sparsity_is_hit_exactly(tok, scope, sparsity):
    """Exact counts: round(sparsity × size) zeros over the pruned set (global) or in every tensor (per-layer)."""
    model = toy_classifier(tok, seed=4)
    masks = magnitude_masks(model, sparsity, PruneConfig(scope=scope))
    total = sum(m.numel() for m in masks.values())
    zeros = {n: int((~m).sum()) for n, m in masks.items()}
    if scope == "global":
        assert sum(zeros.values()) == round(sparsity * total)
    else:
        for name, m in masks.items():
            assert zeros[name] == round(sparsity * m.numel()), name


@pytest.mark.parametrize("n_zero", [0, 1, 7, 8, 9, 15, 16])
def test_exact_count_with_tied_magnitudes(n_zero):
    """Ties at the threshold are broken by position, still zeroing exactly the number asked for."""
    from tlc_export.compress.prune import _prune_count

    scores = torch.tensor([3.0, 1.0, 2.0, 1.0, 2.0, 1.0, 0.5, 1.0, 2.0, 1.0, 3.0, 2.0, 1.0, 0.5, 2.0, 1.0])
    keep = _prune_count(scores, n_zero)
    assert int((~keep).sum()) == n_zero
    if 0 < n_zero < scores.numel():
        assert scores[~keep].max() <= scores[keep].min()


def test_global_pruning_removes_the_smallest_magnitudes(tok):
    model = toy_classifier(tok, seed=5)
    masks = magnitude_masks(model, 0.6, PruneConfig())
    params = dict(model.named_parameters())
    pruned = torch.cat([params[n].detach().abs()[~m] for n, m in masks.items()])
    kept = torch.cat([params[n].detach().abs()[m] for n, m in masks.items()])
    assert pruned.max() <= kept.min()


def test_per_layer_pruning_removes_each_tensors_smallest_magnitudes(tok):
    """Per-layer scope: inside every tensor the zeroed magnitudes are all below the kept ones, and every tensor
    loses the same share, even one scaled up tenfold (a global ranking would spare it)."""
    model = toy_classifier(tok, seed=5)
    params = dict(model.named_parameters())
    big = "roberta_prelayernorm.encoder.layer.0.attention.self.query.weight"
    with torch.no_grad():
        params[big].mul_(10)
    masks = magnitude_masks(model, 0.6, PruneConfig(scope="per-layer"))
    assert big in masks
    for n, m in masks.items():
        w = params[n].detach().abs()
        assert w[~m].max() <= w[m].min(), n
        assert int((~m).sum()) == round(0.6 * m.numel()), n


def test_default_selection_prunes_matrices_and_word_embeddings_only(tok):
    names = prunable_names(toy_classifier(tok), PruneConfig())
    assert "roberta_prelayernorm.embeddings.word_embeddings.weight" in names
    assert "classifier.dense.weight" in names
    assert "roberta_prelayernorm.encoder.layer.1.output.dense.weight" in names
    excluded = ("LayerNorm", "position_embeddings", "out_proj")
    assert not [n for n in names if any(part in n for part in excluded)]
    assert not [n for n in names if n.endswith("bias")]


def test_previous_masks_stay_pruned(tok):
    model = toy_classifier(tok, seed=6)
    cfg = PruneConfig()
    m30 = magnitude_masks(model, 0.30, cfg)
    prune_(model, m30)
    # Perturb the weights so that the 45 % ranking on its own would differ from the 30 % one.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m45 = magnitude_masks(model, 0.45, cfg, previous=m30)
    for n in m30:
        assert not (m45[n] & ~m30[n]).any(), f"{n}: a weight pruned at 30 % came back at 45 %"
    assert sum(int((~m).sum()) for m in m45.values()) == round(0.45 * sum(m.numel() for m in m45.values()))


def test_prune_made_permanent_before_saving(tok, tmp_path):
    from torch.nn.utils import prune as tprune

    model = toy_classifier(tok)
    layer = model.roberta_prelayernorm.encoder.layer[0].output.dense
    tprune.l1_unstructured(layer, "weight", amount=0.5)
    make_permanent_(model)
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if any(part in k for part in ("weight_orig", "weight_mask"))]
    assert (layer.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_ladder_levels_include_every_step():
    assert ladder_levels(PruneConfig(sparsity=[0.3, 0.9], step=0.15)) == [0.15, 0.3, 0.45, 0.6, 0.75, 0.9]


def test_no_requested_level_means_no_ladder(tmp_path):
    """`prune.sparsity: []` (quantize the dense model only) runs no pruning step and saves nothing."""
    assert ladder_levels(PruneConfig(sparsity=[])) == []
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    before = model[0].weight.detach().clone()

    def never(*_args):
        raise AssertionError("recovery ran with no level requested")

    records = run_ladder(model, PruneConfig(sparsity=[]), tmp_path / "ladder", recover=never, load_saved=never,
                         metric="accuracy")
    assert records == [] and not (tmp_path / "ladder").exists()
    assert torch.equal(model[0].weight, before)


def test_recovery_takes_zero_steps_when_already_within_target(trained, tok, task):
    model, base = trained
    model = _copy(model)
    masks = prune_(model, PruneConfig(), sparsity=0.05)
    now = evaluate_accuracy(model, tok, task.dev, MAX_LEN)
    result, ok = recover_(
        model, PruneConfig(recovery_max_steps=20), masks=masks, tokenizer=tok, train=task.train,
        dev=task.dev, finetune_cfg=_ft_cfg(), base_dev_acc=now / 0.995,
    )
    assert ok and result.steps == 0


def test_recovery_stops_at_step_cap_when_target_unreachable(trained, tok, task):
    model = _copy(trained[0])
    masks = prune_(model, PruneConfig(), sparsity=0.9)
    cfg = PruneConfig(recovery_max_steps=6, recovery_eval_every_steps=3)
    result, ok = recover_(
        model, cfg, masks=masks, tokenizer=tok, train=task.train, dev=task.dev,
        finetune_cfg=_ft_cfg(), base_dev_acc=1.01,  # 99.5 % of 1.01 > 1: never reached
    )
    assert not ok and result.steps == 6
    params = dict(model.named_parameters())
    assert all(torch.count_nonzero(params[n][~m]) == 0 for n, m in masks.items())


def test_ladder_is_cumulative_saved_and_resumable(trained, tok, task, tmp_path):
    model = _copy(trained[0])
    cfg = PruneConfig(sparsity=[0.3, 0.45], step=0.15, recovery_max_steps=10, recovery_eval_every_steps=5)
    recs = prune_ladder(model, tok, task, cfg, _ft_cfg(), tmp_path, base_dev_acc=trained[1])
    assert [r.level for r in recs] == ["s15", "s30", "s45"]
    for r in recs:
        assert abs(r.sparsity_reached - r.sparsity) <= 0.001
        assert r.recovery_steps <= 10
    m30 = load_level(tmp_path / "s30")[1]
    m45_model, m45 = load_level(tmp_path / "s45")
    params = dict(m45_model.named_parameters())
    for n, m in m30.items():
        assert not (m45[n] & ~m).any()
        assert torch.count_nonzero(params[n][~m45[n]]) == 0  # zeros are in the saved weights themselves
    # Saved accuracy is the saved model's accuracy.
    assert evaluate_accuracy(m45_model, tok, task.dev, MAX_LEN) == pytest.approx(recs[-1].dev_accuracy)

    # Resume: a further level reuses the saved ones untouched and continues from the 45 % masks.
    stamp = {p.name: (p / "model.safetensors").stat().st_mtime_ns for p in tmp_path.iterdir()}
    cfg2 = cfg.model_copy(update={"sparsity": [0.3, 0.45, 0.6]})
    recs2 = prune_ladder(_copy(trained[0]), tok, task, cfg2, _ft_cfg(), tmp_path, base_dev_acc=trained[1])
    assert [r.level for r in recs2] == ["s15", "s30", "s45", "s60"]
    assert [r.to_dict() for r in recs2[:3]] == [r.to_dict() for r in recs]
    assert all((tmp_path / k / "model.safetensors").stat().st_mtime_ns == v for k, v in stamp.items())
    m60 = load_level(tmp_path / "s60")[1]
    assert all(not (m60[n] & ~m).any() for n, m in m45.items())
    assert json.loads((tmp_path / "s60" / "prune.json").read_text())["level"] == "s60"


def _copy(model):
    import copy

    return copy.deepcopy(model)


def test_ladder_never_goes_down(tok):
    from tlc_export.compress.prune import PruneError

    model = toy_classifier(tok, seed=7)
    m45 = magnitude_masks(model, 0.45, PruneConfig())
    with pytest.raises(PruneError, match="only goes up"):
        magnitude_masks(model, 0.30, PruneConfig(), previous=m45)
