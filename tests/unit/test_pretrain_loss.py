"""The masked-only head and the accumulated training step against plain transformers."""

from __future__ import annotations

import copy

import torch

from tlc_export.config.models import ModelSize
from tlc_export.config.pretrain import PretrainConfig
from tlc_export.data.mlm import mask_tokens
from tlc_export.models import build_mlm
from tlc_export.pretrain.loss import MLMLoss, mlm_loss
from tlc_export.pretrain.step import MaskSpec, TrainStep, make_optimizer

VOCAB, SEQ = 300, 32
SPECIAL = (0, 1, 2, 3, 4)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_mlm(ModelSize(layers=2, hidden=32, heads=2), VOCAB, SEQ, dropout=0.0)


def _batch(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, SEQ), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    return mask_tokens(ids, mask_token_id=4, vocab_size=VOCAB, special_ids=SPECIAL, generator=g)


def test_masked_only_head_equals_hf_loss_and_gradients() -> None:
    model = _model()
    inputs, labels = _batch(4)
    ref = model(input_ids=inputs, labels=labels).loss
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ours = mlm_loss(model, inputs, labels, masked_only=True)
    ours.backward()
    assert torch.allclose(ours, ref, atol=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, ref_grads[n], atol=1e-6), n
    assert torch.allclose(mlm_loss(model, inputs, labels, masked_only=False), ref, atol=1e-5)


def test_accumulated_step_equals_one_big_batch() -> None:
    cfg = PretrainConfig(time_budget_s=1, lr=1e-3, grad_clip=1.0)
    rows = _batch(8)[0].clone()
    rows[rows == 4] = 7  # plain ids; TrainStep masks them itself
    spec = MaskSpec(mask_token_id=4, vocab_size=VOCAB, special_ids=SPECIAL)
    params = []
    losses = []
    for micro in (8, 3):
        model = _model()
        mod = MLMLoss(model, masked_only=True)
        step = TrainStep(mod, make_optimizer(model, cfg, torch.device("cpu")), micro_batch_size=micro,
                         device=torch.device("cpu"), dtype=None, grad_clip=cfg.grad_clip, mask=spec)
        losses.append(step(rows, lr=1e-3, mask_seed=5))
        params.append(copy.deepcopy(model.state_dict()))
    assert abs(losses[0] - losses[1]) < 1e-5
    moved = False
    ref = _model().state_dict()
    for name in params[0]:
        assert torch.allclose(params[0][name], params[1][name], atol=1e-6), name
        moved |= not torch.equal(params[0][name], ref[name])
    assert moved
