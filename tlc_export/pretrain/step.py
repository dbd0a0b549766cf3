"""One optimizer step: dynamic masking, gradient accumulation over micro-batches, DDP, autocast, clipping."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tlc_export.config.pretrain import PretrainConfig
from tlc_export.data.mlm import IGNORE_INDEX, mask_tokens
from tlc_export.pretrain.loss import MLMLoss

CPU_MICRO_BATCH = 16


@dataclass(frozen=True)
class MaskSpec:
    """What `mask_tokens` needs besides the ids."""

    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    probability: float = 0.15


def pick_device(cfg: PretrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from tlc_export.errors import StageError

            raise StageError("pretrain.device is 'cuda' but no CUDA device is visible; set pretrain.device: auto or cpu")
        from tlc_export import distributed

        return torch.device("cuda", distributed.local_rank() if distributed.is_distributed() else torch.cuda.current_device())
    return torch.device("cpu")


def autocast_dtype(cfg: PretrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 on CPU (CPU bf16 matmuls are slow without AMX)."""
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def make_optimizer(model: nn.Module, cfg: PretrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and LayerNorm weights (RoBERTa/BERT practice)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **extra)


def probe_micro_batch(
    loss_fn: nn.Module, device: torch.device, dtype: torch.dtype | None, seq_len: int, vocab_size: int, limit: int
) -> int:
    """Largest power of two ≤ `limit` whose forward + backward fits in GPU memory."""
    mb = 1
    while mb * 2 <= limit:
        mb *= 2
    while mb >= 1:
        try:
            ids = torch.randint(5, vocab_size, (mb, seq_len), device=device)
            labels = torch.where(torch.rand(mb, seq_len, device=device) < 0.15, ids, IGNORE_INDEX)
            with _autocast(device, dtype):
                loss = loss_fn(ids, labels)
            loss.backward()
            return mb
        except torch.cuda.OutOfMemoryError:
            mb //= 2
        finally:
            loss_fn.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    from tlc_export.errors import StageError

    raise StageError("pretrain: even a micro-batch of 1 sequence does not fit in GPU memory; pick a smaller model size")


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class TrainStep:
    """Runs one optimizer step on a global batch of packed rows; this rank trains on rows[rank::world].

    The whole batch is masked with the same seed on every rank, so the masks (and the loss) do not
    depend on the number of processes. The loss is the sum over every masked token of the global
    batch divided by the global masked count, so accumulation and DDP's gradient averaging
    reproduce exactly the step of one big batch.
    """

    def __init__(
        self,
        loss_module: MLMLoss,
        optimizer: torch.optim.Optimizer,
        *,
        micro_batch_size: int,
        device: torch.device,
        dtype: torch.dtype | None,
        grad_clip: float | None,
        mask: MaskSpec,
        forward: nn.Module | None = None,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.loss_module = loss_module
        self.forward = forward if forward is not None else loss_module  # DDP- and/or compile-wrapped
        self.optimizer = optimizer
        self.micro_batch_size = micro_batch_size
        self.device = device
        self.dtype = dtype
        self.grad_clip = grad_clip
        self.mask = mask
        self.all_reduce = all_reduce
        self.rank = rank
        self.world_size = world_size
        self.generator = torch.Generator()

    def __call__(self, rows: torch.Tensor, lr: float, mask_seed: int) -> float:
        """One step; returns the mean masked-LM loss of the global batch."""
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.generator.manual_seed(mask_seed)
        inputs, labels = mask_tokens(
            rows, mask_token_id=self.mask.mask_token_id, vocab_size=self.mask.vocab_size,
            special_ids=self.mask.special_ids, probability=self.mask.probability, generator=self.generator,
        )
        count = float((labels != IGNORE_INDEX).sum().clamp_min(1))
        inputs = inputs[self.rank :: self.world_size].contiguous().to(self.device, non_blocking=True)
        labels = labels[self.rank :: self.world_size].contiguous().to(self.device, non_blocking=True)
        # DDP averages gradients over ranks; multiplying by world size turns that back into a sum.
        scale = self.world_size / count
        self.loss_module.train()
        total = torch.zeros((), device=self.device)
        chunks = list(zip(inputs.split(self.micro_batch_size), labels.split(self.micro_batch_size), strict=True))
        for i, (x, y) in enumerate(chunks):
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.forward, "no_sync") else self.forward.no_sync()
            with sync:
                with _autocast(self.device, self.dtype):
                    loss_sum = self.forward(x, y)
                (loss_sum * scale).backward()
            total += loss_sum.detach()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.loss_module.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.all_reduce is not None:
            total = self.all_reduce(total)
        return float(total) / count
