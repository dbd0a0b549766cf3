"""The masked-only head (static shapes), device masking and the accumulated training step against plain transformers."""

from __future__ import annotations

import copy

import torch

from tlc_export.config.models import ModelSize
from tlc_export.config.pretrain import PretrainConfig
from tlc_export.data.mlm import mask_tokens
from tlc_export.models import build_mlm
from tlc_export.pretrain.loss import MLMLoss, mlm_loss
from tlc_export.pretrain.masking import DeviceMasker, masked_per_row
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


def _rows(n: int, seed: int = 2) -> torch.Tensor:
    """Packed-like rows: <s> … </s>, document separators inside, one row almost all specials."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(5, VOCAB, (n, SEQ), generator=g)
    rows[:, 0], rows[:, -1] = 0, 2
    rows[1, 10] = rows[1, 20] = 2
    rows[2, 1:-3] = 2  # 2 maskable tokens, fewer than k
    return rows


def test_device_masker_masks_k_per_row_and_never_specials() -> None:
    spec = MaskSpec(mask_token_id=4, vocab_size=VOCAB, special_ids=SPECIAL)
    rows = _rows(64)
    inputs, labels = DeviceMasker(spec, "cpu")(rows, seed=3)
    k = masked_per_row(SEQ, 0.15)
    assert k == round(0.15 * SEQ)
    masked = labels != -100
    maskable = ~torch.isin(rows, torch.tensor(SPECIAL))
    assert torch.equal(masked.sum(1), torch.minimum(maskable.sum(1), torch.tensor(k)))
    assert not (masked & ~maskable).any()
    assert torch.equal(labels[masked], rows[masked])  # labels are the original tokens
    assert torch.equal(inputs[~masked], rows[~masked])  # unmasked positions untouched
    became_mask = (inputs[masked] == 4).float().mean().item()
    kept = (inputs[masked] == rows[masked]).float().mean().item()
    assert 0.7 < became_mask < 0.9 and 0.04 < kept < 0.2  # 80/10/10 within sampling noise
    assert not torch.isin(inputs[masked & (inputs != 4)], torch.tensor([0, 1, 2, 3])).any()


def test_device_masks_do_not_depend_on_the_split_of_the_batch() -> None:
    spec = MaskSpec(mask_token_id=4, vocab_size=VOCAB, special_ids=SPECIAL)
    rows = _rows(10)
    full = DeviceMasker(spec, "cpu")(rows, seed=9)
    for rank in range(3):
        part = DeviceMasker(spec, "cpu")(rows[rank::3], seed=9, global_rows=10, rank=rank, world_size=3)
        assert torch.equal(part[0], full[0][rank::3]) and torch.equal(part[1], full[1][rank::3])


def test_static_masked_head_equals_plain_transformers_loss_and_gradients() -> None:
    """Fixed k positions per row (topk, no nonzero), reference: transformers' own MLM loss."""
    spec = MaskSpec(mask_token_id=4, vocab_size=VOCAB, special_ids=SPECIAL)
    inputs, labels = DeviceMasker(spec, "cpu")(_rows(6), seed=1)
    k = masked_per_row(SEQ, 0.15)
    model = _model()
    ref = model(input_ids=inputs, labels=labels).loss
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ours = MLMLoss(model, masked_only=True, capacity=k)(inputs, labels) / (labels != -100).sum()
    ours.backward()
    assert torch.allclose(ours, ref, atol=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, ref_grads[n], atol=1e-6), n


def test_static_head_compiles_to_one_graph_without_host_sync() -> None:
    """torch.compile(fullgraph=True) fails on a graph break (.nonzero(), .item(), data-dependent shapes)."""
    spec = MaskSpec(mask_token_id=4, vocab_size=VOCAB, special_ids=SPECIAL)
    model = _model()
    mod = MLMLoss(model, masked_only=True, capacity=masked_per_row(SEQ, 0.15))
    torch._dynamo.reset()
    compiled = torch.compile(mod, backend="eager", fullgraph=True, dynamic=False)
    inputs, labels = DeviceMasker(spec, "cpu")(_rows(4), seed=5)
    assert torch.allclose(compiled(inputs, labels), mod(inputs, labels), atol=1e-5)
    torch._dynamo.reset()
