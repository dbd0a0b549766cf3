"""Masked-LM pretraining of one size for a fixed budget of training seconds, resumable, optionally DDP."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from transformers import PreTrainedTokenizerBase

from tlc_export import atomic, distributed
from tlc_export.config.models import ModelSize
from tlc_export.config.pretrain import PretrainConfig
from tlc_export.data.mlm import MLMBatches, PackedRows
from tlc_export.errors import StageError
from tlc_export.models import build_mlm, count_params, mlm_flops
from tlc_export.pretrain.epochs import epoch_warning, projected_epochs
from tlc_export.pretrain.evaluate import (
    ValidationSample,
    evaluate,
    fixed_val_batches,
    validation_sample,
)
from tlc_export.pretrain.feed import BatchFeed
from tlc_export.pretrain.kept import is_kept, kept_tag, read_kept, save_kept
from tlc_export.pretrain.loss import MLMLoss
from tlc_export.pretrain.masking import masked_per_row
from tlc_export.pretrain.schedule import lr_at
from tlc_export.pretrain.step import (
    CPU_MICRO_BATCH,
    MaskSpec,
    TrainStep,
    autocast_dtype,
    free_device_memory,
    is_oom,
    make_optimizer,
    pick_device,
    probe_micro_batch,
)
from tlc_export.train import budget
from tlc_export.train.clock import TrainingClock
from tlc_export.train.state import Counters, save_state

CURVES_FILE = "curves.jsonl"
# What the training clock reads (a seam: tests substitute a fake one to compare runs step by step).
# The clock runs from the end of one step to the end of the next, less evaluation and checkpoints
# (see train/clock.py): waiting on the feed and the bookkeeping between steps are training time.
clock = time.perf_counter


@dataclass
class PretrainData:
    """Packed rows and the tokenizer, shared by every size.

    Rows are `PackedRows` over the memory-mapped token files (or in-memory arrays from
    `pack_sequences`, in tests): indexing returns int32 `[k, seq_len]`.
    """

    train_rows: np.ndarray | PackedRows  # [n, seq_len]
    val_rows: np.ndarray | PackedRows
    tokenizer: PreTrainedTokenizerBase
    mlm_probability: float = 0.15
    val_row_sources: np.ndarray | None = None  # data.sources index of each validation row (None: one source)
    source_labels: list[str] | None = None
    data_fraction: float = 1.0  # data.fraction: share of the training documents in train_rows
    train_documents: dict[str, int] | None = None  # {kept, of}: training documents used, of the split's

    @property
    def seq_len(self) -> int:
        return int(self.train_rows.shape[1])

    @property
    def train_tokens(self) -> int:
        """Tokens in the training rows: the corpus size one epoch covers."""
        return len(self.train_rows) * (self.seq_len - 2)

    def validation_sample(self, cfg: PretrainConfig) -> ValidationSample:
        """The fixed validation rows every evaluation of every size uses (seeded by pretrain.seed)."""
        bs = cfg.eval_batch_size or min(cfg.batch_size, 32)
        return validation_sample(len(self.val_rows), self.val_row_sources, list(self.source_labels or []),
                                 cfg.eval_batches * bs, bs, cfg.seed)

    def mask_spec(self) -> MaskSpec:
        tok = self.tokenizer
        return MaskSpec(
            mask_token_id=int(tok.mask_token_id),
            vocab_size=len(tok),
            special_ids=tuple(int(i) for i in tok.all_special_ids),
            probability=self.mlm_probability,
        )


def pretrain_size(
    size: ModelSize,
    cfg: PretrainConfig,
    data: PretrainData,
    out_dir: Path,
    *,
    dropout: float = 0.1,
    console: Console | None = None,
    on_step: Callable[[Counters], None] | None = None,
    stop_at_s: float | None = None,
) -> dict[str, Any]:
    """Train `size` until `cfg.time_budget_s` training seconds have passed; return its result row.

    `stop_at_s` (a pilot, `tlc plan`): stop once the training clock passes it, evaluate, save the
    resumable state and return a row with `pilot: true`; the schedule still runs on the full budget, so
    a later call without it continues exactly as if it had never stopped.

    `out_dir` is `pretrain/<size>/`. A finished size (checkpoint/done.json) is returned as is; a
    `state/` folder from an interrupted run is resumed. Every rank calls this; only rank 0 writes.
    `on_step` is called after each optimizer step (progress hooks, tests).
    """
    console = console or Console(quiet=True)
    out_dir = Path(out_dir)
    if (row := budget.finished(out_dir)) is not None:
        return row

    world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    if cfg.batch_size < world:
        raise StageError(
            f"pretrain.batch_size={cfg.batch_size} is smaller than the {world} processes; "
            "raise pretrain.batch_size to at least the number of processes"
        )
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg)
    dtype = autocast_dtype(cfg, device)
    tok = data.tokenizer
    mask = data.mask_spec()

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every resume
    model = build_mlm(
        size, vocab_size=len(tok), max_seq_len=data.seq_len, dropout=dropout,
        pad_id=int(tok.pad_token_id), bos_id=int(tok.bos_token_id), eos_id=int(tok.eos_token_id),
    ).to(device)
    # Two views of one model: evaluation sizes the head per batch (CPU-masked validation rows), training
    # gathers a fixed k positions per row (static shapes, see loss.py).
    loss_module = MLMLoss(model, masked_only=cfg.masked_only_head)
    k_masked = masked_per_row(data.seq_len, data.mlm_probability)
    train_module = MLMLoss(model, masked_only=cfg.masked_only_head, capacity=k_masked)
    optimizer = make_optimizer(model, cfg, device)
    if cfg.compile:
        torch._dynamo.reset()  # a fresh cache per size: earlier sizes' graphs must not count against the recompile limit

    state_dir = out_dir / "state"
    curves_path = out_dir / CURVES_FILE
    counters, resumed = budget.start(out_dir, curves_path, model, optimizer, checkpoint_every_s=cfg.checkpoint_every_s,
                                     seed=cfg.seed, rank=rank, world=world, main=main)

    per_rank = math.ceil(cfg.batch_size / world)
    micro = _micro_batch(cfg, counters, train_module, optimizer, device, dtype, data.seq_len, mask, per_rank)
    counters.micro_batch_size = micro
    step_fn, compile_s, graphs = _build_step(cfg, train_module, optimizer, micro, device, dtype, mask, rank, world, data.seq_len)
    counters.compile_s += compile_s

    batches = MLMBatches(data.train_rows, cfg.batch_size, seed=cfg.seed, start=counters.data_position)
    sample = data.validation_sample(cfg)
    val = fixed_val_batches(data.val_rows, sample.indices, sample.batch_size, mask, cfg.seed) if main else []
    if main and not val:
        raise StageError("data/tokens/val.bin: the validation split has no full sequence; raise data.val_fraction")
    flops = mlm_flops(model, data.seq_len)
    tokens_per_step = cfg.batch_size * data.seq_len
    budget_s = cfg.time_budget_s

    warning: dict[str, Any] = {"text": None, "projected": None}

    def trained_epochs() -> float:
        # From the position of the last batch trained on: the feed may have prepared batches ahead.
        return counters.data_position / max(1, len(data.train_rows))

    def check_epochs(projected: float | None) -> None:
        text = epoch_warning(size.name, projected, data.train_tokens, len(data.train_rows), data.seq_len, budget_s,
                             counters.tokens / max(counters.elapsed_s, 1e-9))
        if text:
            warning.update(text=text, projected=projected)
            console.print(f"[bold yellow]warning:[/bold yellow] {text}", highlight=False)

    def log_eval(train_losses: list[float], kept: str | None = None) -> dict[str, Any]:
        v = evaluate(loss_module, val, device, dtype, micro)
        point = {
            "size": size.name, "elapsed_s": round(counters.elapsed_s, 4), "step": counters.step,
            "tokens": counters.tokens, "epochs": trained_epochs(),
            "flops": flops.paper(counters.tokens), "flops_paper": flops.paper(counters.tokens),
            "flops_computed": counters.flops_computed,
            "lr": lr_at(counters.elapsed_s, budget_s, cfg.lr, cfg.warmup_fraction),
            "train_loss": sum(train_losses) / len(train_losses) if train_losses else None,
            "val_loss": v.loss, "val_ppl": v.ppl, "val_loss_sums": v.loss_sums, "val_token_counts": v.token_counts,
            "wall_time": time.time(),
        }
        if kept:
            point["kept"] = kept
        atomic.append_jsonl(curves_path, point)
        counters.curves_lines += 1
        progress.update(task, ppl=f"{v.ppl:.1f}")
        if warning["projected"] is None and counters.elapsed_s > 0:
            # Once, at the first evaluation with training time behind it: the projection to the budget.
            warning["projected"] = projected_epochs(trained_epochs(), counters.elapsed_s, budget_s)
            check_epochs(warning["projected"])
        return point

    def keep(fraction: float, train_losses: list[float]) -> None:
        """Evaluate now and keep a loadable checkpoint (main process only)."""
        p = log_eval(train_losses, kept=kept_tag(fraction))
        save_kept(out_dir, fraction, model, tok, {
            k: p[k] for k in ("elapsed_s", "step", "tokens", "epochs", "flops_paper", "val_loss", "val_ppl")})
        console.print(f"[dim]{size.name}: kept the checkpoint at {100 * fraction:g} % of the budget "
                      f"(step {counters.step}, val ppl {p['val_ppl']:.2f})[/dim]")

    progress, task = budget.progress_bar(console, size.name, budget_s, counters, show=main, resumed=resumed,
                                         eval_label="val ppl", eval_field="ppl")
    if main and compile_s:
        console.print(f"[dim]{size.name}: compiled in {compile_s:.1f}s (not on the training clock)[/dim]")
    train_losses: list[float] = []
    # The step of the last evaluation on record (a resumed state's own, so it is not repeated).
    last_eval_step = int(atomic.read_jsonl(curves_path)[-1]["step"]) if main and curves_path.exists() and counters.curves_lines else -1
    feed = BatchFeed(batches.next_batch, lambda: batches.position, device, rank=rank, world_size=world)
    steps_here = 0
    # Fractions still to keep (1.0 is the final checkpoint); a kept folder from before a resume stays.
    to_keep = [f for f in cfg.keep_checkpoints_at if f < 1 and not is_kept(out_dir, f)]

    def between_steps() -> None:
        nonlocal last_eval_step, train_losses
        last_eval_step, train_losses = _evaluate_and_checkpoint(
            cfg, counters, to_keep, budget_s, main, last_eval_step, train_losses, keep, log_eval,
            lambda: save_state(state_dir, model, optimizer, counters))

    def step(train_clock: TrainingClock) -> budget.StepResult:
        nonlocal step_fn, graphs
        rows, position = feed.next()
        lr = lr_at(counters.elapsed_s, budget_s, cfg.lr, cfg.warmup_fraction)
        while True:
            try:
                loss = step_fn(rows, lr, mask_seed=cfg.seed * 1_000_003 + counters.step, global_rows=cfg.batch_size)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                break
            except Exception as exc:  # noqa: BLE001 - only a first-step OOM is answered; see below
                if not (steps_here == 0 and world == 1 and step_fn.micro_batch_size > 1 and is_oom(exc)):
                    raise
            # Out of memory on this process's first step (the probe cannot foresee everything): start
            # the step again with half the micro-batch. Outside the handler, so its tensors are gone.
            optimizer.zero_grad(set_to_none=True)
            free_device_memory(device)
            micro = step_fn.micro_batch_size // 2
            console.print(f"[yellow]{size.name}: out of memory on the first step; micro-batch halved to {micro}[/yellow]")
            counters.micro_batch_size = micro
            step_fn, rebuild_s, graphs = _build_step(cfg, train_module, optimizer, micro, device, dtype, mask, rank,
                                                     world, data.seq_len)
            counters.compile_s += rebuild_s
            train_clock.start()  # the failed attempt and the rebuild were set-up, not training
        return budget.StepResult(loss, tokens_per_step, position)

    def after_step(r: budget.StepResult) -> None:
        nonlocal steps_here
        steps_here += 1
        counters.flops_computed += flops.computed(step_fn.rows_computed * data.seq_len,
                                                  step_fn.rows_computed * _predicted_per_row(cfg, data.seq_len, k_masked))
        train_losses.append(r.loss)
        progress.update(task, completed=min(counters.elapsed_s, budget_s), step=counters.step,
                        loss=f"{r.loss:.3f}", tps=f"{counters.tokens / max(counters.elapsed_s, 1e-9):,.0f}")

    def pilot_stop() -> None:  # `stop_at_s`: the pilot's own last point (when no evaluation was due) and its state
        if main and last_eval_step != counters.step:
            log_eval(train_losses)
        if main:
            save_state(state_dir, model, optimizer, counters)

    with progress, contextlib.closing(feed):
        stopped = budget.run(counters, budget_s, device=device, world=world, read=clock, between_steps=between_steps,
                             step=step, after_step=after_step, on_step=on_step, stop_at_s=stop_at_s, on_stop=pilot_stop)
        if stopped:
            distributed.barrier()
            return {"model": size.name, "pilot": True, "steps": counters.step, "tokens": counters.tokens,
                    "elapsed_s": round(counters.elapsed_s, 4), "budget_s": budget_s, "stop_at_s": stop_at_s,
                    "tokens_per_s": counters.tokens / max(counters.elapsed_s, 1e-9),
                    "steps_per_s": counters.step / max(counters.elapsed_s, 1e-9),
                    "params": count_params(model), "micro_batch_size": step_fn.micro_batch_size,
                    "device": str(device), "state": str(state_dir)}
        if main:
            log_eval(train_losses)
            if warning["text"] is None:
                # The early projection can undershoot (warm-up, compile): judge the epochs actually seen.
                check_epochs(trained_epochs())

    row = {
        "model": size.name, "layers": size.layers, "hidden": size.hidden,
        "params": count_params(model), "non_embedding_params": count_params(model, non_embedding=True),
        "steps": counters.step, "tokens": counters.tokens, "elapsed_s": round(counters.elapsed_s, 3),
        "budget_s": budget_s, "tokens_per_s": counters.tokens / max(counters.elapsed_s, 1e-9),
        "flops": flops.paper(counters.tokens), "flops_paper": flops.paper(counters.tokens),
        "flops_computed": counters.flops_computed, "flops_params": flops.params,
        "compile_s": round(counters.compile_s, 3), "compiled": cfg.compile,
        "recompiles_after_warmup": _graphs() - graphs if cfg.compile else None,
        # Graphs compiled by the warm-up: more than one means graph breaks split the step.
        "unique_graphs_after_warmup": graphs if cfg.compile else None,
        "masked_per_row": k_masked if cfg.masked_only_head else None,
        "final_val_loss": None, "final_val_ppl": None, "micro_batch_size": step_fn.micro_batch_size,
        "epochs": trained_epochs(), "train_tokens": data.train_tokens, "train_rows": len(data.train_rows),
        "projected_epochs": warning["projected"], "epoch_warning": warning["text"],
        "batch_size": cfg.batch_size, "world_size": world, "device": str(device),
        "checkpoint": str(Path(out_dir.name) / "checkpoint"),
    }
    if main:
        last = atomic.read_jsonl(curves_path)[-1]
        row["final_val_loss"], row["final_val_ppl"] = last["val_loss"], last["val_ppl"]
        row["kept_checkpoints"] = _kept_rows(out_dir, cfg, last)

        def save(folder: Path) -> None:
            model.save_pretrained(folder)
            tok.save_pretrained(folder)

        budget.finish(out_dir, row, save)
        console.print(
            f"[green]{size.name}[/green]: {counters.step} steps, {row['tokens_per_s']:,.0f} tok/s, "
            f"val ppl {row['final_val_ppl']:.2f}"
            + (f", compile {counters.compile_s:.1f}s outside the budget" if cfg.compile else "")
        )
    if cfg.compile:
        torch._dynamo.reset()  # drop this size's graphs (and CUDA-graph pools) before the next size
    distributed.barrier()
    return row


def _kept_rows(out_dir: Path, cfg: PretrainConfig, last: dict[str, Any]) -> list[dict[str, Any]]:
    """The size's kept checkpoints, earliest first; fraction 1.0 is the final checkpoint itself."""
    rows = [r for r in read_kept(out_dir) if r.get("fraction") in cfg.keep_checkpoints_at]
    if 1.0 in cfg.keep_checkpoints_at:
        rows.append({"tag": kept_tag(1.0), "fraction": 1.0, "final": True,
                     **{k: last.get(k) for k in ("elapsed_s", "step", "tokens", "epochs", "flops_paper", "val_loss",
                                                 "val_ppl")},
                     "checkpoint": f"{out_dir.name}/checkpoint"})
    return rows


def _graphs() -> int:
    """Graphs dynamo has compiled in this process since its last reset (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _predicted_per_row(cfg: PretrainConfig, seq_len: int, k_masked: int) -> int:
    """Positions per row the vocabulary head runs on."""
    return k_masked if cfg.masked_only_head else seq_len


def _build_step(
    cfg: PretrainConfig, train_module: MLMLoss, optimizer: torch.optim.Optimizer, micro: int, device: torch.device,
    dtype: torch.dtype | None, mask: MaskSpec, rank: int, world: int, seq_len: int,
) -> tuple[TrainStep, float, int]:
    """The step function, its compile warm-up seconds (0 when nothing is compiled), and the count of
    compiled graphs after the warm-up (any later increase is a recompile)."""
    forward: torch.nn.Module = train_module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        forward = DDP(train_module, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        torch._dynamo.reset()
        # dynamic=False: one static graph; micro-batches never change shape (see TrainStep).
        forward = torch.compile(forward, backend=cfg.compile_backend, dynamic=False)
    step_fn = TrainStep(
        train_module, optimizer, micro_batch_size=micro, device=device, dtype=dtype, grad_clip=cfg.grad_clip,
        mask=mask, forward=forward, all_reduce=budget.all_reduce if world > 1 else None, rank=rank, world_size=world,
    )
    if not (cfg.compile or device.type == "cuda"):
        return step_fn, 0.0, 0
    # Compilation, autotuning and CUDA's lazy initialisation happen here, before the clock starts.
    t0 = time.perf_counter()
    step_fn.warmup(seq_len, cfg.batch_size)
    return step_fn, (time.perf_counter() - t0) if cfg.compile else 0.0, _graphs() if cfg.compile else 0


def _micro_batch(
    cfg: PretrainConfig, counters: Counters, loss_module: MLMLoss, optimizer: torch.optim.Optimizer,
    device: torch.device, dtype: torch.dtype | None, seq_len: int, mask: MaskSpec, per_rank: int,
) -> int:
    if counters.micro_batch_size:
        micro = counters.micro_batch_size  # keep what the interrupted run used (probed, configured or halved)
    elif cfg.micro_batch_size is not None:
        micro = min(cfg.micro_batch_size, per_rank)
    elif device.type == "cuda":
        micro = probe_micro_batch(loss_module, optimizer, device, dtype, seq_len, mask, per_rank)
    else:
        micro = min(CPU_MICRO_BATCH, per_rank)
    if distributed.world_size() > 1:
        micro = int(budget.all_reduce(torch.tensor(float(micro), device=device), op="min"))
    return micro


def _evaluate_and_checkpoint(
    cfg: PretrainConfig, counters: Counters, to_keep: list[float], budget: float, main: bool, last_eval_step: int,
    train_losses: list[float], keep: Callable[[float, list[float]], None],
    log_eval: Callable[[list[float]], dict[str, Any]], save: Callable[[], None],
) -> tuple[int, list[float]]:
    """The kept checkpoints, evaluations and state checkpoints due before the next step (rank 0 writes).

    Returns the step of the last evaluation and the training losses not yet reported."""
    if to_keep and counters.elapsed_s >= to_keep[0] * budget:
        while to_keep and counters.elapsed_s >= to_keep[0] * budget:
            fraction = to_keep.pop(0)
            if main:
                keep(fraction, train_losses)
                train_losses = []
                last_eval_step = counters.step
                if counters.elapsed_s >= counters.next_eval_s:  # that evaluation was just made
                    counters.next_eval_s = counters.elapsed_s + cfg.eval_every_s
        if main:  # a resume starts after the kept checkpoint, never before it
            save()
    if main and _eval_due(cfg, counters, last_eval_step):
        last_eval_step = counters.step
        log_eval(train_losses)
        train_losses = []
        counters.next_eval_s = counters.elapsed_s + cfg.eval_every_s
    if counters.step > 0 and counters.elapsed_s >= counters.next_checkpoint_s:
        counters.next_checkpoint_s = counters.elapsed_s + cfg.checkpoint_every_s
        if main:
            save()
    return last_eval_step, train_losses


def _eval_due(cfg: PretrainConfig, counters: Counters, last_eval_step: int) -> bool:
    """Every `eval_every_steps` optimizer steps (the same steps for every size) or every `eval_every_s`."""
    if cfg.eval_every_steps:
        return counters.step % cfg.eval_every_steps == 0 and counters.step != last_eval_step
    return counters.elapsed_s >= counters.next_eval_s
