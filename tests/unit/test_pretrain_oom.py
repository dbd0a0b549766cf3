"""Micro-batch probe and out-of-memory recovery, with allocation failures injected on the CPU."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from torch import nn

from tlc_export.config.models import ModelSize
from tlc_export.config.pretrain import PretrainConfig
from tlc_export.models import build_mlm
from tlc_export.pretrain.loss import MLMLoss
from tlc_export.pretrain.step import MaskSpec, is_oom, make_optimizer, probe_micro_batch

VOCAB, SEQ = 300, 32
SPEC = MaskSpec(mask_token_id=4, vocab_size=VOCAB, special_ids=(0, 1, 2, 3, 4))
CPU = torch.device("cpu")


class _OOMInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


class FakeLoss(nn.Module):
    """Real model loss, except that micro-batches above `fits` fail in backward, as a real OOM would.

    Every attempt keeps a weak reference to a large activation; an attempt starting while an
    earlier attempt's activation is still alive means the probe held on to a failed graph.
    """

    def __init__(self, model: nn.Module, fits: int) -> None:
        super().__init__()
        self.inner = MLMLoss(model, masked_only=True)
        self.fits = fits
        self.alive: list[weakref.ref] = []
        self.leaks = 0
        self.sizes: list[int] = []

    def forward(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        gc.collect()
        self.leaks += sum(r() is not None for r in self.alive)
        self.sizes.append(len(ids))
        big = torch.ones(len(ids), 256, 1024, requires_grad=True) * 1.0  # held by the graph only
        self.alive.append(weakref.ref(big))
        loss = self.inner(ids, labels) + big.sum() * 0
        return _OOMInBackward.apply(loss) if len(ids) > self.fits else loss


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_mlm(ModelSize(layers=1, hidden=32, heads=2), VOCAB, SEQ, dropout=0.0)


def test_probe_frees_each_failed_attempt_and_halves(one_thread: None) -> None:
    model = _model()
    fake = FakeLoss(model, fits=4)
    mb = probe_micro_batch(fake, None, CPU, None, SEQ, SPEC, limit=30)
    assert mb == 4 and fake.sizes == [16, 8, 4]
    assert fake.leaks == 0, "a failed attempt's graph was still alive when the next attempt began"
    assert all(p.grad is None for p in model.parameters())


def test_probe_counts_the_optimizer_step_and_leaves_weights_and_state_alone(one_thread: None) -> None:
    model = _model()
    opt = make_optimizer(model, PretrainConfig(time_budget_s=1, lr=1e-2), CPU)
    before = copy.deepcopy(model.state_dict())
    real_step = opt.step
    sizes: list[int] = []

    def step_that_fails_when_big(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        # AdamW's state is allocated by the first step: the probe must include it.
        if sizes[-1] > 2:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)")
        return real_step(*a, **kw)

    loss = MLMLoss(model, masked_only=True)
    loss.register_forward_pre_hook(lambda _m, args: sizes.append(len(args[0])))
    opt.step = step_that_fails_when_big  # type: ignore[method-assign]
    assert probe_micro_batch(loss, opt, CPU, None, SEQ, SPEC, limit=8) == 2
    assert sizes == [8, 4, 2]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the probe moved {k}"
    assert len(opt.state) == 0 and opt.param_groups[0]["lr"] == 1e-2


def test_other_errors_are_not_taken_for_oom() -> None:
    assert is_oom(torch.OutOfMemoryError("x"))
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert is_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not is_oom(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_oom(ValueError("out of memory"))

    class Broken(nn.Module):
        def forward(self, ids, labels):  # noqa: ANN001, ANN202
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        probe_micro_batch(Broken(), None, CPU, None, SEQ, SPEC, limit=4)
