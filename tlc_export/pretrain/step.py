"""One optimizer step: masking on the device, gradient accumulation over fixed-size micro-batches,
DDP, autocast, clipping; the micro-batch probe and CUDA out-of-memory handling."""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from tlc_export.config.pretrain import PretrainConfig
from tlc_export.data.mlm import IGNORE_INDEX
from tlc_export.pretrain.loss import MLMLoss
from tlc_export.pretrain.masking import DeviceMasker, MaskSpec, masked_per_row

__all__ = [
    "CPU_MICRO_BATCH", "MaskSpec", "TrainStep", "autocast_dtype", "free_device_memory", "is_oom",
    "make_optimizer", "pick_device", "probe_micro_batch",
]

CPU_MICRO_BATCH = 16
# Fraction of the GPU the probe may fill: what a real step adds beyond the probed one (allocator
# fragmentation, DDP's gradient buckets, compiled kernels' workspaces) must fit in the rest.
PROBE_MEMORY_FRACTION = 0.90

# Messages of allocation failures that are not raised as torch.OutOfMemoryError (cuBLAS, cuDNN,
# NCCL and older code paths report them as plain RuntimeErrors).
_OOM_MESSAGES = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED", "NCCL_ALLOC")


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


def is_oom(exc: BaseException) -> bool:
    """Whether `exc` is a device allocation failure (any of the forms CUDA libraries raise)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OOM_MESSAGES)


def free_device_memory(device: torch.device) -> None:
    """Collect unreachable tensors (graphs kept alive by reference cycles) and return cached blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Work inside does not move the global RNG streams (resume reproduces an uninterrupted run)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        yield


def probe_micro_batch(
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    device: torch.device,
    dtype: torch.dtype | None,
    seq_len: int,
    mask: MaskSpec,
    limit: int,
    *,
    memory_fraction: float = PROBE_MEMORY_FRACTION,
    total_memory: int | None = None,
) -> int:
    """Largest power of two ≤ `limit` whose forward, backward and optimizer step fit in memory.

    Each attempt runs in its own function scope; on an out-of-memory error everything it
    allocated (graph, gradients, optimizer state) is released before the next, smaller attempt.
    The optimizer step runs with zero gradients and lr 0, so the weights do not move, and its
    state is cleared afterwards (it is allocated again, at the same size, by the first real step).
    An attempt that fits but leaves less than 1 − `memory_fraction` of the device free counts as
    too big. The global RNG streams are left as they were.
    """
    mb = 1
    while mb * 2 <= limit:
        mb *= 2
    masker = DeviceMasker(mask, device)
    if total_memory is None and device.type == "cuda":
        total_memory = torch.cuda.get_device_properties(device).total_memory
    while mb >= 1:
        with preserved_rng(device):
            fits = _probe_attempt(loss_fn, optimizer, masker, device, dtype, seq_len, mb)
        _release_probe(loss_fn, optimizer, device)
        if fits and total_memory:
            peak = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else 0
            fits = peak <= memory_fraction * total_memory
        if fits:
            return mb
        mb //= 2
    from tlc_export.errors import StageError

    raise StageError("pretrain: even a micro-batch of 1 sequence does not fit in GPU memory; pick a smaller model size")


def _probe_attempt(
    loss_fn: nn.Module, optimizer: torch.optim.Optimizer | None, masker: DeviceMasker, device: torch.device,
    dtype: torch.dtype | None, seq_len: int, mb: int,
) -> bool:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        _probe_step(loss_fn, optimizer, masker, device, dtype, seq_len, mb)
        return True
    except Exception as exc:  # noqa: BLE001 - only allocation failures are answered, the rest re-raised
        if is_oom(exc):
            return False  # leaving the handler drops the traceback and with it the attempt's tensors
        raise


def _probe_step(
    loss_fn: nn.Module, optimizer: torch.optim.Optimizer | None, masker: DeviceMasker, device: torch.device,
    dtype: torch.dtype | None, seq_len: int, mb: int,
) -> None:
    ids = torch.randint(0, masker.spec.vocab_size, (mb, seq_len), device=device)
    inputs, labels = masker(ids, seed=0)
    with autocast(device, dtype):
        loss = loss_fn(inputs, labels)
    loss.backward()
    if optimizer is not None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for p in params:
            if p.grad is not None:
                p.grad.zero_()
        lrs = [g["lr"] for g in optimizer.param_groups]
        try:
            for g in optimizer.param_groups:
                g["lr"] = 0.0
            optimizer.step()
        finally:
            for g, lr in zip(optimizer.param_groups, lrs, strict=True):
                g["lr"] = lr


def _release_probe(loss_fn: nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device) -> None:
    loss_fn.zero_grad(set_to_none=True)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
        optimizer.state.clear()
    free_device_memory(device)


class TrainStep:
    """Runs one optimizer step on this rank's rows of a global batch of packed rows.

    Rows are masked on the training device (`DeviceMasker`): the draws cover the whole global
    batch, so masks do not depend on the number of processes. The loss is the sum over every masked
    token of the global batch divided by the global masked count, so accumulation and DDP's
    gradient averaging reproduce exactly the step of one big batch. Every micro-batch has the same
    shape: the last one is padded with rows whose labels are all ignored (zero loss, zero
    gradient), and every rank runs the same number of micro-batches, so torch.compile sees one
    shape and DDP's collectives line up.
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
        self.masker = DeviceMasker(mask, device)
        self.all_reduce = all_reduce
        self.rank = rank
        self.world_size = world_size
        self.rows_computed = 0  # rows run through the model by the last step, padding included

    def _check_capacity(self, seq_len: int) -> None:
        cap = getattr(self.loss_module, "capacity", None)
        k = masked_per_row(seq_len, self.mask.probability)
        if getattr(self.loss_module, "masked_only", False) and cap is not None and cap < k:
            raise ValueError(f"MLMLoss capacity {cap} is below the {k} positions masked per row")

    def chunks(self, global_rows: int) -> int:
        """Micro-batches per step on every rank."""
        return math.ceil(math.ceil(global_rows / self.world_size) / self.micro_batch_size)

    def _micro_batches(
        self, inputs: torch.Tensor, labels: torch.Tensor, n_chunks: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        rows = n_chunks * self.micro_batch_size
        if rows > len(inputs):
            pad = rows - len(inputs)
            inputs = torch.cat([inputs, inputs.new_full((pad, inputs.shape[1]), self.mask.mask_token_id)])
            labels = torch.cat([labels, labels.new_full((pad, labels.shape[1]), IGNORE_INDEX)])
        self.rows_computed = rows * self.world_size
        return list(zip(inputs.split(self.micro_batch_size), labels.split(self.micro_batch_size), strict=True))

    def __call__(self, rows: torch.Tensor, lr: float, mask_seed: int, global_rows: int | None = None) -> float:
        """One step; returns the mean masked-LM loss of the global batch.

        `rows`: the whole global batch (`global_rows` None), or this rank's rows
        `global[rank::world]` of a batch of `global_rows` (what `BatchFeed` hands over), on the
        CPU or already on the device.
        """
        if global_rows is None:
            global_rows = len(rows)
            rows = rows[self.rank :: self.world_size]
        self._check_capacity(rows.shape[1])
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        rows = rows.to(self.device, non_blocking=True)
        inputs, labels = self.masker(rows, mask_seed, global_rows=global_rows, rank=self.rank, world_size=self.world_size)
        count = (labels != IGNORE_INDEX).sum()
        if self.all_reduce is not None:
            count = self.all_reduce(count)
        # A device tensor, so no host sync; DDP averages gradients over ranks and the world size
        # turns that back into a sum.
        scale = self.world_size / count.clamp_min(1).float()
        self.loss_module.train()
        total = torch.zeros((), device=self.device)
        chunks = self._micro_batches(inputs, labels, self.chunks(global_rows))
        for i, (x, y) in enumerate(chunks):
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.forward, "no_sync") else self.forward.no_sync()
            with sync:
                with autocast(self.device, self.dtype):
                    loss_sum = self.forward(x, y)
                (loss_sum * scale).backward()
            total += loss_sum.detach()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.loss_module.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.all_reduce is not None:
            total = self.all_reduce(total)
        return float(total / count.clamp_min(1))

    def warmup(self, seq_len: int, global_rows: int) -> None:
        """Forward and backward passes of one step's shapes on made-up rows, then no update.

        Compiles (and autotunes) every graph a step uses, both DDP paths (no_sync and the last,
        synchronising micro-batch) included, so the training clock never pays for compilation.
        Gradients are dropped; the global RNG streams are left as they were.
        """
        self._check_capacity(seq_len)
        n_local = len(range(self.rank, global_rows, self.world_size))
        rows = torch.randint(0, self.mask.vocab_size, (n_local, seq_len), device=self.device)
        with preserved_rng(self.device):
            inputs, labels = self.masker(rows, 0, global_rows=global_rows, rank=self.rank, world_size=self.world_size)
            chunks = self._micro_batches(inputs, labels, self.chunks(global_rows))
            first, last = chunks[0], chunks[-1]
            self.loss_module.train()
            paths = [(first, False), (last, True)] if len(chunks) > 1 else [(last, True)]
            for (x, y), sync_grads in paths:
                ctx = contextlib.nullcontext() if sync_grads or not hasattr(self.forward, "no_sync") else self.forward.no_sync()
                with ctx:
                    with autocast(self.device, self.dtype):
                        loss_sum = self.forward(x, y)
                    loss_sum.backward()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_module.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
