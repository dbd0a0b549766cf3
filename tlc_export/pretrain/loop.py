"""Masked-LM pretraining of one size for a fixed budget of training seconds, resumable, optionally DDP."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import PreTrainedTokenizerBase

from tlc_export import atomic, distributed
from tlc_export.config.models import ModelSize
from tlc_export.config.pretrain import PretrainConfig
from tlc_export.data.mlm import MLMBatches, PackedRows
from tlc_export.errors import StageError
from tlc_export.models import build_mlm, count_params, train_flops
from tlc_export.pretrain.epochs import epoch_warning, projected_epochs
from tlc_export.pretrain.evaluate import (
    ValidationSample,
    evaluate,
    fixed_val_batches,
    validation_sample,
)
from tlc_export.pretrain.loss import MLMLoss
from tlc_export.pretrain.schedule import lr_at
from tlc_export.pretrain.state import Counters, load_state, save_state
from tlc_export.pretrain.step import (
    CPU_MICRO_BATCH,
    MaskSpec,
    TrainStep,
    autocast_dtype,
    make_optimizer,
    pick_device,
    probe_micro_batch,
)

DONE_FILE = "done.json"
CURVES_FILE = "curves.jsonl"


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

    @property
    def seq_len(self) -> int:
        return int(self.train_rows.shape[1])

    @property
    def train_tokens(self) -> int:
        """Tokens in the training rows: the corpus size one epoch covers."""
        return len(self.train_rows) * (self.seq_len - 2)

    def validation_sample(self, cfg: PretrainConfig) -> ValidationSample:
        """The fixed validation rows every evaluation of every size uses (seeded by pretrain.seed)."""
        bs = min(cfg.batch_size, 32)
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
) -> dict[str, Any]:
    """Train `size` until `cfg.time_budget_s` training seconds have passed; return its result row.

    `out_dir` is `pretrain/<size>/`. A finished size (checkpoint/done.json) is returned as is; a
    `state/` folder from an interrupted run is resumed. Every rank calls this; only rank 0 writes.
    `on_step` is called after each optimizer step (progress hooks, tests).
    """
    console = console or Console(quiet=True)
    out_dir = Path(out_dir)
    done = out_dir / "checkpoint" / DONE_FILE
    if done.exists():
        return json.loads(done.read_text())

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
    loss_module = MLMLoss(model, masked_only=cfg.masked_only_head)
    optimizer = make_optimizer(model, cfg, device)

    state_dir = out_dir / "state"
    curves_path = out_dir / CURVES_FILE
    counters = Counters(next_checkpoint_s=cfg.checkpoint_every_s)
    resumed = state_dir.exists()
    if resumed:
        counters = load_state(state_dir, model, optimizer, restore_rng=world == 1)
        if main:
            _truncate_jsonl(curves_path, counters.curves_lines)
    elif main and curves_path.exists():
        curves_path.unlink()  # points from an attempt that never reached a checkpoint
    if world > 1 or not resumed:
        # Dropout differs per rank; a resumed multi-rank run cannot restore other ranks' RNGs.
        torch.manual_seed(cfg.seed * 7919 + rank * 104_729 + counters.step)

    per_rank = math.ceil(cfg.batch_size / world)
    micro = _micro_batch(cfg, counters, loss_module, device, dtype, data.seq_len, mask.vocab_size, per_rank)
    counters.micro_batch_size = micro

    forward: torch.nn.Module = loss_module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        forward = DDP(loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile and device.type == "cuda":
        forward = torch.compile(forward)
    step_fn = TrainStep(
        loss_module, optimizer, micro_batch_size=micro, device=device, dtype=dtype, grad_clip=cfg.grad_clip,
        mask=mask, forward=forward, all_reduce=_all_reduce if world > 1 else None, rank=rank, world_size=world,
    )

    batches = MLMBatches(data.train_rows, cfg.batch_size, seed=cfg.seed, start=counters.data_position)
    sample = data.validation_sample(cfg)
    val = fixed_val_batches(data.val_rows, sample.indices, sample.batch_size, mask, cfg.seed) if main else []
    if main and not val:
        raise StageError("data/tokens/val.bin: the validation split has no full sequence; raise data.val_fraction")
    flops_params = count_params(model, non_embedding=True) + model.config.vocab_size * size.hidden
    tokens_per_step = cfg.batch_size * data.seq_len
    budget = cfg.time_budget_s

    warning: dict[str, Any] = {"text": None, "projected": None}

    def check_epochs(projected: float | None) -> None:
        text = epoch_warning(size.name, projected, data.train_tokens, len(data.train_rows), data.seq_len, budget,
                             counters.tokens / max(counters.elapsed_s, 1e-9))
        if text:
            warning.update(text=text, projected=projected)
            console.print(f"[bold yellow]warning:[/bold yellow] {text}", highlight=False)

    def log_eval(train_losses: list[float]) -> None:
        v = evaluate(loss_module, val, device, dtype, micro)
        atomic.append_jsonl(curves_path, {
            "size": size.name, "elapsed_s": round(counters.elapsed_s, 4), "step": counters.step,
            "tokens": counters.tokens, "epochs": batches.epoch,
            "flops": train_flops(flops_params, counters.tokens, size.layers, size.hidden, data.seq_len),
            "lr": lr_at(counters.elapsed_s, budget, cfg.lr, cfg.warmup_fraction),
            "train_loss": sum(train_losses) / len(train_losses) if train_losses else None,
            "val_loss": v.loss, "val_ppl": v.ppl, "val_loss_sums": v.loss_sums, "val_token_counts": v.token_counts,
            "wall_time": time.time(),
        })
        counters.curves_lines += 1
        progress.update(task, ppl=f"{v.ppl:.1f}")
        if warning["projected"] is None and counters.elapsed_s > 0:
            # Once, at the first evaluation with training time behind it: the projection to the budget.
            warning["projected"] = projected_epochs(batches.epoch, counters.elapsed_s, budget)
            check_epochs(warning["projected"])

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}s"),
        TextColumn("step {task.fields[step]} · loss {task.fields[loss]} · val ppl {task.fields[ppl]} · "
                   "{task.fields[tps]} tok/s"),
        TimeElapsedColumn(), console=console, disable=not main,
    )
    task = progress.add_task(size.name, total=budget, completed=min(counters.elapsed_s, budget),
                             step=counters.step, loss="-", ppl="-", tps="-")
    if main and resumed:
        console.print(f"[cyan]{size.name}: resuming at step {counters.step}, {counters.elapsed_s:.1f}s of {budget:g}s[/cyan]")
    train_losses: list[float] = []
    with progress:
        while True:
            counters.elapsed_s = _shared_elapsed(counters.elapsed_s, device, world)
            if counters.elapsed_s >= budget:
                break
            # Evaluation and checkpoints happen between steps, outside the training clock.
            if main and counters.elapsed_s >= counters.next_eval_s:
                log_eval(train_losses)
                train_losses = []
                counters.next_eval_s = counters.elapsed_s + cfg.eval_every_s
            if counters.step > 0 and counters.elapsed_s >= counters.next_checkpoint_s:
                counters.next_checkpoint_s = counters.elapsed_s + cfg.checkpoint_every_s
                if main:
                    save_state(state_dir, model, optimizer, counters)

            t0 = time.perf_counter()
            lr = lr_at(counters.elapsed_s, budget, cfg.lr, cfg.warmup_fraction)
            loss = step_fn(batches.next_batch(), lr, mask_seed=cfg.seed * 1_000_003 + counters.step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            counters.elapsed_s += time.perf_counter() - t0
            counters.step += 1
            counters.tokens += tokens_per_step
            counters.data_position = batches.position
            counters.last_train_loss = loss
            train_losses.append(loss)
            progress.update(task, completed=min(counters.elapsed_s, budget), step=counters.step,
                            loss=f"{loss:.3f}", tps=f"{counters.tokens / max(counters.elapsed_s, 1e-9):,.0f}")
            if on_step is not None:
                on_step(counters)
        if main:
            log_eval(train_losses)
            if warning["text"] is None:
                # The early projection can undershoot (warm-up, compile): judge the epochs actually seen.
                check_epochs(batches.epoch)

    row = {
        "model": size.name, "layers": size.layers, "hidden": size.hidden,
        "params": count_params(model), "non_embedding_params": count_params(model, non_embedding=True),
        "steps": counters.step, "tokens": counters.tokens, "elapsed_s": round(counters.elapsed_s, 3),
        "budget_s": budget, "tokens_per_s": counters.tokens / max(counters.elapsed_s, 1e-9),
        "flops": train_flops(flops_params, counters.tokens, size.layers, size.hidden, data.seq_len),
        "final_val_loss": None, "final_val_ppl": None, "micro_batch_size": micro,
        "epochs": batches.epoch, "train_tokens": data.train_tokens, "train_rows": len(data.train_rows),
        "projected_epochs": warning["projected"], "epoch_warning": warning["text"],
        "batch_size": cfg.batch_size, "world_size": world, "device": str(device),
        "checkpoint": str(Path(out_dir.name) / "checkpoint"),
    }
    if main:
        last = atomic.read_jsonl(curves_path)[-1]
        row["final_val_loss"], row["final_val_ppl"] = last["val_loss"], last["val_ppl"]
        with atomic.atomic_path(out_dir / "checkpoint") as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / DONE_FILE).write_text(json.dumps(row, indent=2) + "\n")
        shutil.rmtree(state_dir, ignore_errors=True)
        console.print(
            f"[green]{size.name}[/green]: {counters.step} steps, {row['tokens_per_s']:,.0f} tok/s, "
            f"val ppl {row['final_val_ppl']:.2f}"
        )
    distributed.barrier()
    return row


def _micro_batch(
    cfg: PretrainConfig, counters: Counters, loss_module: MLMLoss, device: torch.device,
    dtype: torch.dtype | None, seq_len: int, vocab_size: int, per_rank: int,
) -> int:
    if cfg.micro_batch_size is not None:
        micro = min(cfg.micro_batch_size, per_rank)
    elif counters.micro_batch_size:
        micro = counters.micro_batch_size  # keep what the interrupted run probed
    elif device.type == "cuda":
        micro = probe_micro_batch(loss_module, device, dtype, seq_len, vocab_size, per_rank)
    else:
        micro = min(CPU_MICRO_BATCH, per_rank)
    if distributed.world_size() > 1:
        micro = int(_all_reduce(torch.tensor(float(micro), device=device), op="min"))
    return micro


def _all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return t


def _shared_elapsed(elapsed: float, device: torch.device, world: int) -> float:
    """Rank 0's training clock, so every rank stops (and schedules) at the same step."""
    if world == 1:
        return elapsed
    import torch.distributed as dist

    t = torch.tensor([elapsed], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def _truncate_jsonl(path: Path, lines: int) -> None:
    """Drop curve points logged after the state being resumed (those steps are redone)."""
    records = atomic.read_jsonl(path)
    if len(records) != lines:
        atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in records[:lines]))
