"""The finetuning loop, shared by the finetune stage and by pruning recovery.

One loop serves both: AdamW with linear warmup/decay, dev evaluation every N steps, the best dev
state kept in memory, an optional early-stop rule and plateau patience (`converged` says whether dev
accuracy had stopped improving before training ended), and optional pruning masks that hold pruned
weights at exactly zero (their gradients are zeroed before each step and the mask is re-applied
after it, because AdamW's weight decay and moment estimates would otherwise move them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from transformers import get_linear_schedule_with_warmup

from tlc_export.compress.masks import bind_masks
from tlc_export.finetune.batching import Encoded, collate, encode_examples, shuffled_batches
from tlc_export.finetune.evaluate import accuracy_on_encoded, model_device

if TYPE_CHECKING:
    from tlc_export.config.finetune import FinetuneConfig

StopRule = Callable[[int, float], bool]
"""Called with (step, dev accuracy) after every evaluation; True ends training."""


@dataclass
class TrainSettings:
    """How one training run goes; built from the recipe's `finetune` section or by pruning recovery."""

    lr: float
    batch_size: int
    max_steps: int
    max_length: int = 64
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    eval_every_steps: int | None = None  # None: once per epoch
    seed: int = 0
    grad_clip: float | None = 1.0
    eval_at_start: bool = False  # evaluate before the first step (pruning recovery may need no steps)
    keep_best: bool = True  # end with the best-dev weights rather than the last ones
    eval_batch_size: int = 64
    bf16: bool = False  # bf16 autocast for the training forward (CUDA); weights and evaluation stay fp32
    patience: int | None = None  # end once this many evaluations in a row did not beat the best dev accuracy
    min_steps: int = 0  # the plateau rule never ends training before this step (a flat start is not a plateau)

    @classmethod
    def from_finetune(cls, cfg: FinetuneConfig, num_train: int, lr: float | None = None, seed: int | None = None) -> TrainSettings:
        """One candidate of the recipe's grid: `lr` and `seed` (default: the first of each list)."""
        steps_per_epoch = max(1, math.ceil(num_train / cfg.batch_size))
        return cls(
            lr=cfg.lr[0] if lr is None else lr,
            batch_size=cfg.batch_size,
            max_steps=max(1, math.ceil(cfg.epochs * steps_per_epoch)),
            max_length=cfg.max_length,
            warmup_ratio=cfg.warmup_ratio,
            weight_decay=cfg.weight_decay,
            eval_every_steps=cfg.eval_every_steps,
            seed=cfg.seeds[0] if seed is None else seed,
            bf16=use_bf16(cfg.precision),
            patience=cfg.patience,
            min_steps=steps_per_epoch if cfg.patience is not None else 0,
        )


def use_bf16(precision: str) -> bool:
    """The recipe's `finetune.precision` resolved on this machine."""
    return precision == "bf16" or (precision == "auto" and torch.cuda.is_available())


CONVERGED_AFTER = 2
"""A run has converged when its best dev accuracy came at least this many evaluations before its last."""


@dataclass
class TrainResult:
    steps: int
    seconds: float
    best_step: int
    best_dev_accuracy: float
    final_dev_accuracy: float
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)  # {step, dev_accuracy, train_loss, elapsed_s}

    @property
    def evals_since_best(self) -> int:
        """Evaluations after the best one (ties keep the earlier): 0 when the last was the best."""
        return evals_since_best(self.history)

    @property
    def converged(self) -> bool:
        """Dev accuracy stopped improving: no new best in the last `CONVERGED_AFTER` evaluations."""
        return self.evals_since_best >= CONVERGED_AFTER


def evals_since_best(history: Sequence[Mapping[str, float]]) -> int:
    """How many evaluations of `history` came after its first best dev accuracy."""
    if not history:
        return 0
    accs = [h["dev_accuracy"] for h in history]
    return len(accs) - 1 - accs.index(max(accs))


def _mask_params(model: nn.Module, masks: Mapping[str, torch.Tensor] | None) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(parameter, 0/1 mask in its dtype) pairs, so a multiply keeps pruned weights and grads at exactly 0."""
    if not masks:
        return []
    return [(p, m.to(dtype=p.dtype)) for p, m in bind_masks(model, masks)]


def _adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """AdamW with the fused kernel where this torch has it for these tensors (CPU and CUDA in recent
    versions; on a small CPU model the per-parameter loop is ~20 % of a step, fused ~5 %): the same
    update rule, so results match the loop version up to float rounding."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(groups, lr=lr)


def _no_decay(name: str) -> bool:
    return name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name


def finetune_(
    model: nn.Module,
    cfg: TrainSettings,
    *,
    tokenizer: Any,
    train: Sequence[Any] | Encoded,
    dev: Sequence[Any] | Encoded,
    masks: Mapping[str, torch.Tensor] | None = None,
    should_stop: StopRule | None = None,
    console: Console | None = None,
    description: str = "finetune",
) -> TrainResult:
    """Train `model` in place on `train`, evaluating on `dev`; see the module docstring."""
    train_enc = train if isinstance(train, Encoded) else encode_examples(tokenizer, train, cfg.max_length)
    dev_enc = dev if isinstance(dev, Encoded) else encode_examples(tokenizer, dev, cfg.max_length)
    device = model_device(model)
    masked = _mask_params(model, masks)
    steps_per_epoch = max(1, math.ceil(len(train_enc) / cfg.batch_size))
    eval_every = cfg.eval_every_steps or steps_per_epoch

    torch.manual_seed(cfg.seed)  # dropout
    gen = torch.Generator().manual_seed(cfg.seed)  # data order
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not _no_decay(n)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in named if _no_decay(n)], "weight_decay": 0.0},
    ]
    opt = _adamw(groups, cfg.lr)
    sched = get_linear_schedule_with_warmup(opt, round(cfg.warmup_ratio * cfg.max_steps), max(1, cfg.max_steps))

    def apply_masks() -> None:
        with torch.no_grad():
            for p, m in masked:
                p.mul_(m)

    apply_masks()
    start = time.perf_counter()
    history: list[dict[str, float]] = []
    best_acc, best_step, best_state = -1.0, 0, None

    def evaluate(step: int, loss: float) -> float:
        nonlocal best_acc, best_step, best_state
        acc = accuracy_on_encoded(model, dev_enc, cfg.eval_batch_size)
        history.append({"step": step, "dev_accuracy": acc, "train_loss": loss, "elapsed_s": time.perf_counter() - start})
        if acc > best_acc:
            best_acc, best_step = acc, step
            if cfg.keep_best:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return acc

    step, stopped, last_acc, running = 0, False, float("nan"), float("nan")
    if cfg.eval_at_start or cfg.max_steps == 0:
        last_acc = evaluate(0, running)
        stopped = should_stop is not None and should_stop(0, last_acc)

    model.train()
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"), console=console, transient=True,
    )
    with progress:
        task = progress.add_task(description, total=cfg.max_steps, info="")
        batches = shuffled_batches(len(train_enc), cfg.batch_size, gen)
        while not stopped and step < cfg.max_steps:
            batch = collate(train_enc, next(batches), device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = model(**batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for p, m in masked:
                if p.grad is not None:
                    p.grad.mul_(m)
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            apply_masks()
            step += 1
            lv = float(loss.detach())
            running = lv if math.isnan(running) else 0.9 * running + 0.1 * lv
            if step % eval_every == 0 or step == cfg.max_steps:
                last_acc = evaluate(step, running)
                stopped = (should_stop is not None and should_stop(step, last_acc)) or (
                    cfg.patience is not None and step >= cfg.min_steps and evals_since_best(history) >= cfg.patience)
            progress.update(task, advance=1, info=f"loss {running:.3f} dev {best_acc:.3f}")

    if cfg.keep_best and best_state is not None and best_step != step:
        model.load_state_dict(best_state)
        apply_masks()
    model.eval()
    return TrainResult(
        steps=step,
        seconds=time.perf_counter() - start,
        best_step=best_step,
        best_dev_accuracy=best_acc,
        final_dev_accuracy=last_acc,
        stopped_early=stopped and step < cfg.max_steps,
        history=history,
    )
