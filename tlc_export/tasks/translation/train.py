"""Budgeted training of one translation size: the pretraining loop's rules, for an encoder-decoder.

The same rules as masked-LM pretraining (`tlc_export.pretrain.loop`): every size trains for
`translation.train.time_budget_s` seconds of training steps; the learning rate is a function of those
seconds (`pretrain.schedule.lr_at`: warm-up, then linear decay to 0 at the budget); evaluation and
checkpoints happen between steps, off the clock (`train.clock`: the clock runs from the end of one step
to the end of the next, so the plan, the progress bar and the DDP broadcast count); the first step's
shapes are warmed up (cuBLAS handles, allocator pools, autocast kernels) before the clock starts; a `state/` folder (weights, optimizer, counters,
RNG, written atomically by `train.state`) lets a killed run resume exactly where its last
checkpoint was.

A step is a batch of about `batch_tokens` tokens: consecutive micro-batches of length-sorted pairs
(`batching.token_batches`, reshuffled every epoch with the seed) until their source + target tokens
reach the target. The loss is the step's summed label-smoothed cross-entropy divided by its target
tokens, so every token weighs the same whichever micro-batch it fell in. The data position is the
number of micro-batches consumed, so a resume continues with the very next one.

Every evaluation scores the fixed dev sample twice: teacher-forced loss (per target token) and the
greedy translations' BLEU and chrF (`curves.jsonl`, one line per evaluation: Figure 5's points).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from tlc_export import atomic
from tlc_export.config.translation import TranslationConfig, TranslationSize
from tlc_export.errors import StageError
from tlc_export.pretrain.schedule import lr_at
from tlc_export.pretrain.step import autocast_dtype, make_optimizer, pick_device, preserved_rng
from tlc_export.tasks.translation.batching import (
    EncodedPairs,
    PairIds,
    batch_order,
    batch_plan,
    collate,
    token_batches,
)
from tlc_export.tasks.translation.decode import translate
from tlc_export.tasks.translation.loss import label_smoothed_loss, teacher_forced_logits
from tlc_export.tasks.translation.metrics import score_translations
from tlc_export.tasks.translation.model import build_translation_model
from tlc_export.train import budget
from tlc_export.train.clock import TrainingClock
from tlc_export.train.state import Counters, save_state

CURVES_FILE = "curves.jsonl"
CPU_MICRO_TOKENS = 2048
EVAL_MICRO_TOKENS = 4096
# What the training clock reads (a seam: tests substitute a fake one to compare runs step by step).
clock = time.perf_counter


@dataclass
class DevSample:
    """The fixed dev sentences every evaluation of every size scores (encoded, and as text for BLEU)."""

    sources: list[str]
    references: list[str]
    encoded: EncodedPairs


class StepPlan:
    """Which micro-batches make each step, from a data position (micro-batches consumed so far).

    The length-sorted micro-batches are planned once (`batching.batch_plan`); every epoch visits them
    in its own seeded order. Under torchrun a step holds at least one micro-batch per process, and
    every process computes the same plan, so rank r takes micro-batches r, r + world, … of each step."""

    def __init__(self, enc: PairIds, micro_tokens: int, step_tokens: int, seed: int, world: int = 1) -> None:
        if len(enc) == 0:
            raise StageError("translation: the training split is empty")
        self.enc, self.micro_tokens, self.step_tokens, self.seed, self.world = enc, micro_tokens, step_tokens, seed, world
        self._epoch: int = -1
        self._visit = np.zeros(0, dtype=np.int64)  # the current epoch's batch order
        self.plan = batch_plan(enc, micro_tokens)
        self.per_epoch = len(self.plan)
        self._tokens = enc.source_lengths() + enc.target_lengths()

    def micro_batch(self, position: int) -> list[int]:
        epoch = position // self.per_epoch
        if epoch != self._epoch:
            self._epoch, self._visit = epoch, batch_order(self.per_epoch, self.seed * 1000 + epoch)
        return self.plan.batch(int(self._visit[position % self.per_epoch]))

    def next_step(self, position: int) -> tuple[list[list[int]], int]:
        """The micro-batches of the step starting at `position` and the position after it."""
        out, tokens = [], 0
        while tokens < self.step_tokens or len(out) < self.world:
            idx = self.micro_batch(position)
            out.append(idx)
            tokens += int(self._tokens[idx].sum())
            position += 1
        return out, position


def dev_loss(model: Any, enc: EncodedPairs, device: torch.device) -> tuple[float, int]:
    """Teacher-forced NLL per target token on `enc` (fp32, eval mode) and the target tokens counted."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.inference_mode():
            for idx in token_batches(enc, EVAL_MICRO_TOKENS):
                batch = collate(enc, idx, device)
                parts = label_smoothed_loss(teacher_forced_logits(model, batch), batch["labels"], 0.0)
                total += float(parts.nll)
                count += int(parts.tokens)
    finally:
        model.train(was)
    return total / max(count, 1), count


def train_translation_size(
    size: TranslationSize,
    cfg: TranslationConfig,
    tokenizers: Any,
    train: PairIds,
    dev: DevSample | None,
    out_dir: Path,
    *,
    console: Console | None = None,
    on_step: Callable[[Counters], None] | None = None,
) -> dict[str, Any]:
    """Train `size` for the budget; return its result row. `out_dir` is `<stage>/<size>/`: a finished size
    (`checkpoint/done.json`) is returned as is, a `state/` folder from an interrupted run is resumed.

    `train`: `EncodedPairs` (lists) or `PairFiles` (memory-mapped), the same steps either way. Under
    torchrun every rank calls this: each takes its share of every step's micro-batches, gradients are
    summed across ranks, rank 0's clock decides for all, and only rank 0 evaluates (`dev` may be None
    elsewhere) and writes."""
    from tlc_export import distributed

    console = console or Console(quiet=True)
    out_dir = Path(out_dir)
    if (row := budget.finished(out_dir)) is not None:
        return row
    world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    if main and dev is None:
        raise StageError("translation: the main process needs the dev sample to evaluate")
    t = cfg.train
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    if t.device == "cuda" and not torch.cuda.is_available():
        raise StageError("translation.train.device is 'cuda' but no CUDA device is visible; set it to auto or cpu")
    device = pick_device(t)  # type: ignore[arg-type]  # reads .device, which the section shares
    dtype = autocast_dtype(t, device)  # type: ignore[arg-type]
    target_vocab = None if tokenizers.shared else len(tokenizers.target)
    model = build_translation_model(size, cfg, source_vocab=len(tokenizers.source), target_vocab=target_vocab,
                                    seed=t.seed).to(device)
    optimizer = make_optimizer(model, t, device)  # type: ignore[arg-type]

    state_dir, curves_path = out_dir / "state", out_dir / CURVES_FILE
    counters, resumed = budget.start(out_dir, curves_path, model, optimizer, checkpoint_every_s=t.checkpoint_every_s,
                                     seed=t.seed, rank=rank, world=world, main=main)
    forward: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        forward = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    micro_tokens = t.max_tokens_per_micro_batch or (t.batch_tokens if device.type == "cuda" else min(CPU_MICRO_TOKENS, t.batch_tokens))
    plan = StepPlan(train, micro_tokens, t.batch_tokens, t.seed, world=world)
    budget_s = t.time_budget_s
    train_losses: list[float] = []

    def evaluate_now() -> dict[str, Any]:
        assert dev is not None
        loss, n_tok = dev_loss(model, dev.encoded, device)
        hyps = translate(model, tokenizers, dev.sources, cfg.decoding, max_source_length=cfg.max_source_length,
                         strategy="greedy")
        score = score_translations(hyps, dev.references, bootstrap=1)  # curves: the point, no interval
        point = {
            "size": size.name, "elapsed_s": round(counters.elapsed_s, 4), "step": counters.step,
            "tokens": counters.tokens, "epochs": counters.data_position / plan.per_epoch,
            "lr": lr_at(counters.elapsed_s, budget_s, t.lr, t.warmup_fraction),
            "train_loss": sum(train_losses) / len(train_losses) if train_losses else None,
            "dev_loss": loss, "dev_ppl": math.exp(min(loss, 50.0)), "dev_target_tokens": n_tok,
            "dev_bleu": score.bleu, "dev_chrf": score.chrf, "dev_sentences": score.n, "decoding": "greedy",
            "bleu_signature": score.bleu_signature, "wall_time": time.time(),
        }
        atomic.append_jsonl(curves_path, point)
        counters.curves_lines += 1
        return point

    progress, task = budget.progress_bar(console, size.name, budget_s, counters, show=main, resumed=resumed,
                                         eval_label="dev BLEU", eval_field="bleu")
    model.train()
    final: dict[str, Any] = {}
    if counters.elapsed_s < budget_s:
        # The first step's set-up (cuBLAS handles, allocator pools, autocast kernels) before the clock starts.
        _warmup(model, optimizer, train, plan.next_step(counters.data_position)[0], cfg, device, dtype,
                forward=forward, rank=rank, world=world)

    def between_steps() -> None:
        nonlocal train_losses
        if counters.elapsed_s >= counters.next_eval_s:
            if main:
                p = evaluate_now()
                progress.update(task, bleu=f"{p['dev_bleu']:.2f}")
            train_losses = []
            counters.next_eval_s = counters.elapsed_s + t.eval_every_s
        if counters.step > 0 and counters.elapsed_s >= counters.next_checkpoint_s:
            counters.next_checkpoint_s = counters.elapsed_s + t.checkpoint_every_s
            if main:
                save_state(state_dir, model, optimizer, counters)

    def step(_clock: TrainingClock) -> budget.StepResult:
        micro, position = plan.next_step(counters.data_position)
        lr = lr_at(counters.elapsed_s, budget_s, t.lr, t.warmup_fraction)
        loss, tokens = train_step(model, optimizer, train, micro, lr, cfg, device, dtype, forward=forward, rank=rank,
                                  world=world)
        return budget.StepResult(loss, tokens, position)

    def after_step(r: budget.StepResult) -> None:
        train_losses.append(r.loss)
        progress.update(task, completed=min(counters.elapsed_s, budget_s), step=counters.step, loss=f"{r.loss:.3f}",
                        tps=f"{counters.tokens / max(counters.elapsed_s, 1e-9):,.0f}")

    with progress:
        budget.run(counters, budget_s, device=device, world=world, read=clock, between_steps=between_steps, step=step,
                   after_step=after_step, on_step=on_step)
        if main:
            final = evaluate_now()
    if main:
        console.print(f"[green]{size.name}[/green]: {counters.step} steps, {counters.tokens / max(counters.elapsed_s, 1e-9):,.0f} "
                      f"tok/s, dev loss {final['dev_loss']:.3f}, dev BLEU {final['dev_bleu']:.2f} (greedy, fixed sample)")

    # Learned parameters, tied tables once; the sinusoidal position tables are fixed (requires_grad False).
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    row = {
        "model": size.name, "layers": size.layers, "decoder_layers": size.num_decoder_layers, "hidden": size.hidden,
        "heads": size.num_heads, "params": params, "steps": counters.step, "tokens": counters.tokens,
        "elapsed_s": round(counters.elapsed_s, 3), "budget_s": budget_s,
        "tokens_per_s": counters.tokens / max(counters.elapsed_s, 1e-9), "batch_tokens": t.batch_tokens,
        "micro_tokens": micro_tokens, "epochs": counters.data_position / plan.per_epoch, "train_pairs": len(train),
        "final_dev_loss": final.get("dev_loss"), "final_dev_bleu": final.get("dev_bleu"),
        "final_dev_chrf": final.get("dev_chrf"), "bleu_signature": final.get("bleu_signature"), "device": str(device),
        "precision": "bf16" if dtype == torch.bfloat16 else "fp32", "world_size": world,
        "checkpoint": str(Path(out_dir.name) / "checkpoint"),
    }
    if main:
        from tlc_export.finetune.model import quiet_transformers

        def save(folder: Path) -> None:
            with quiet_transformers():
                model.save_pretrained(str(folder))

        budget.finish(out_dir, row, save)
    distributed.barrier()
    return row


def _accumulate(model: Any, enc: PairIds, micro: Sequence[list[int]], cfg: TranslationConfig, device: torch.device,
                dtype: torch.dtype | None, forward: torch.nn.Module, rank: int, world: int) -> torch.Tensor:
    """Forward and backward over this rank's share of `micro`, gradients summed; returns the summed
    label-smoothed loss as a device tensor (no host sync per micro-batch)."""
    t = cfg.train
    step_targets = sum(len(enc.target[i]) for idx in micro for i in idx)
    mine = list(micro[rank::world])
    total = torch.zeros((), dtype=torch.float64, device=device)
    for k, idx in enumerate(mine):
        batch = collate(enc, idx, device)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        # Under DDP gradients are all-reduced once, on this rank's last micro-batch.
        sync = contextlib.nullcontext() if world == 1 or k == len(mine) - 1 else forward.no_sync()  # type: ignore[operator]
        with sync:
            with ctx:
                logits = teacher_forced_logits(model, batch, forward=forward)
            parts = label_smoothed_loss(logits, batch["labels"], t.label_smoothing)
            (parts.smoothed * (world / step_targets)).backward()
        total += parts.smoothed.detach().double()
    return total


def _warmup(model: Any, optimizer: torch.optim.Optimizer, enc: PairIds, micro: Sequence[list[int]],
            cfg: TranslationConfig, device: torch.device, dtype: torch.dtype | None, *,
            forward: torch.nn.Module | None = None, rank: int = 0, world: int = 1) -> None:
    """The first step's forward and backward passes, then no update: gradients dropped, RNG streams as they
    were, so the run is the same step for step as one without it (and a resumed run as an uninterrupted one)."""
    with preserved_rng(device):
        _accumulate(model, enc, micro, cfg, device, dtype, forward if forward is not None else model, rank, world)
    optimizer.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model: Any, optimizer: torch.optim.Optimizer, enc: PairIds, micro: Sequence[list[int]], lr: float,
          cfg: TranslationConfig, device: torch.device, dtype: torch.dtype | None, *,
          forward: torch.nn.Module | None = None, rank: int = 0, world: int = 1) -> tuple[float, int]:
    """One optimizer step over `micro` (this rank takes micro-batches rank, rank + world, …); returns the
    step's label-smoothed loss per target token and its source + target tokens (all ranks together).

    Each rank's loss is divided by the step's target tokens over all ranks; DDP averages gradients,
    so the loss is also scaled by `world`: the summed gradient is exactly one process's over all of `micro`.
    The host waits on the device once per step (the loss), never per micro-batch."""
    t = cfg.train
    forward = forward if forward is not None else model
    lengths = [(len(enc.source[i]), len(enc.target[i])) for idx in micro for i in idx]
    step_targets, step_tokens = sum(x[1] for x in lengths), sum(x[0] + x[1] for x in lengths)
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = _accumulate(model, enc, micro, cfg, device, dtype, forward, rank, world)
    if world > 1:
        total = budget.all_reduce(total.reshape(1))[0]
    if t.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    # The one host sync of the step (it also ends the step for the training clock).
    return float(total) / max(step_targets, 1), step_tokens


def dev_sample(pairs: Sequence[Any], tokenizers: Any, cfg: TranslationConfig) -> DevSample:
    """The first `train.eval_sentences` dev pairs in corpus order (a fixed sample: the same for every size)."""
    from tlc_export.tasks.translation.batching import encode_pairs

    chosen = list(pairs[: cfg.train.eval_sentences])
    return DevSample([p.source for p in chosen], [p.target for p in chosen],
                     encode_pairs(tokenizers, chosen, cfg.max_source_length, cfg.max_target_length))
