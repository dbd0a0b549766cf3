"""The budgeted training loop: resume, seeding, the shared clock, off-clock evaluation and checkpoints, the
done marker. A family calls it with its own step and its own "between steps" (evaluation, checkpoints).

A size trains until `budget` training seconds (`train.clock`) have passed. Under torchrun rank 0's clock
is broadcast before every step, so every rank stops and schedules at the same step. A `state/` folder
(weights, optimizer, counters, RNG: `train.state`) lets a killed run resume exactly where its last
checkpoint was; curve points logged after that checkpoint are dropped, since those steps are redone.
A finished size is a `checkpoint/` folder with `done.json` (its result row), written atomically.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tlc_export import atomic
from tlc_export.train.clock import TrainingClock
from tlc_export.train.state import Counters, has_state, load_state

DONE_FILE = "done.json"


@dataclass
class StepResult:
    """What one optimizer step reports to the loop."""

    loss: float  # the step's training loss
    tokens: int  # tokens it trained on (all ranks)
    position: int  # the data position after it


def finished(out_dir: Path) -> dict[str, Any] | None:
    """The result row of a finished size (`checkpoint/done.json`), else None."""
    done = Path(out_dir) / "checkpoint" / DONE_FILE
    return json.loads(done.read_text()) if done.exists() else None


def start(out_dir: Path, curves_path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
          checkpoint_every_s: float, seed: int, rank: int, world: int, main: bool) -> tuple[Counters, bool]:
    """Fresh counters, or those of `out_dir/state/` (weights, optimizer and, on one process, RNG restored);
    then the dropout seed. Returns (counters, resumed)."""
    state_dir = Path(out_dir) / "state"
    counters = Counters(next_checkpoint_s=checkpoint_every_s)
    resumed = has_state(state_dir)
    if resumed:
        counters = load_state(state_dir, model, optimizer, restore_rng=world == 1)
        if main:
            truncate_jsonl(curves_path, counters.curves_lines)
    elif main and curves_path.exists():
        curves_path.unlink()  # points from an attempt that never reached a checkpoint
    if world > 1 or not resumed:
        # Dropout differs per rank; a resumed multi-rank run cannot restore other ranks' RNGs (one rank's
        # resume restores its RNG state instead).
        torch.manual_seed(seed * 7919 + rank * 104_729 + counters.step)
    return counters, resumed


def progress_bar(console: Any, name: str, budget_s: float, counters: Counters, *, show: bool, resumed: bool,
                 eval_label: str, eval_field: str) -> tuple[Any, Any]:
    """The size's progress bar (training seconds of the budget, step, loss, the family's evaluation, tokens/s)
    and its task; says first when the size resumes."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if show and resumed:
        console.print(f"[cyan]{name}: resuming at step {counters.step}, {counters.elapsed_s:.1f}s of {budget_s:g}s[/cyan]")
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}s"),
        TextColumn(f"step {{task.fields[step]}} · loss {{task.fields[loss]}} · {eval_label} {{task.fields[{eval_field}]}} · "
                   "{task.fields[tps]} tok/s"),
        TimeElapsedColumn(), console=console, disable=not show,
    )
    task = progress.add_task(name, total=budget_s, completed=min(counters.elapsed_s, budget_s),
                             step=counters.step, loss="-", tps="-", **{eval_field: "-"})
    return progress, task


def run(counters: Counters, budget: float, *, device: torch.device, world: int, read: Callable[[], float],
        between_steps: Callable[[], None], step: Callable[[TrainingClock], StepResult],
        after_step: Callable[[StepResult], None], on_step: Callable[[Counters], None] | None = None,
        stop_at_s: float | None = None, on_stop: Callable[[], None] | None = None) -> bool:
    """Steps until `budget` training seconds have passed (`read`: the clock, a seam for tests).

    Before each step `between_steps` runs off the clock (evaluation, checkpoints); `step(clock)` trains one
    optimizer step (it may `clock.start()` again after set-up it had to redo); then the counters advance,
    `after_step` does the family's bookkeeping and `on_step` is told. `stop_at_s` (a pilot): stop once the
    clock passes it, after that step's evaluation and checkpoint, `on_stop` running off the clock; the
    schedule still runs on the whole budget. Returns whether it stopped there."""
    clock = TrainingClock(read)
    clock.start()
    while True:
        counters.elapsed_s = shared_elapsed(counters.elapsed_s, device, world)
        if counters.elapsed_s >= budget:
            return False
        with clock.paused():  # evaluation and checkpoints: between steps, off the training clock
            between_steps()
        if stop_at_s is not None and counters.elapsed_s >= stop_at_s:
            # After this step's regular evaluation and checkpoint, as in the uninterrupted run.
            with clock.paused():
                if on_stop is not None:
                    on_stop()
            return True
        result = step(clock)
        counters.elapsed_s += clock.lap()  # the end of this step
        counters.step += 1
        counters.tokens += result.tokens
        counters.data_position = result.position
        counters.last_train_loss = result.loss
        after_step(result)
        if on_step is not None:
            on_step(counters)


def finish(out_dir: Path, row: dict[str, Any], save: Callable[[Path], None]) -> None:
    """The size's `checkpoint/` (what `save(folder)` writes, and `done.json`), atomically; `state/` goes."""
    out_dir = Path(out_dir)
    with atomic.atomic_path(out_dir / "checkpoint") as tmp:
        save(tmp)
        (tmp / DONE_FILE).write_text(json.dumps(row, indent=2) + "\n")
    shutil.rmtree(out_dir / "state", ignore_errors=True)


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place across the torchrun processes: sum, or `op="min"`."""
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return t


def shared_elapsed(elapsed: float, device: torch.device, world: int) -> float:
    """Rank 0's training clock, so every rank stops (and schedules) at the same step."""
    if world == 1:
        return elapsed
    import torch.distributed as dist

    t = torch.tensor([elapsed], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def truncate_jsonl(path: Path, lines: int) -> None:
    """Drop curve points logged after the state being resumed (those steps are redone)."""
    records = atomic.read_jsonl(path)
    if len(records) != lines:
        atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in records[:lines]))
