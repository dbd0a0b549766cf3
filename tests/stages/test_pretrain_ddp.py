"""Two-process gloo DDP: a shared clock (same step count on both ranks), one writer, exact gradient sums."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
from pathlib import Path

import pytest
import torch
from test_pretrain_loop import SIZE, cfg, make_data, step_clock

from tlc_export.atomic import read_jsonl
from tlc_export.config.models import ModelSize
from tlc_export.models import build_mlm
from tlc_export.pretrain.loss import MLMLoss
from tlc_export.pretrain.step import MaskSpec, TrainStep, make_optimizer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_step(rows: torch.Tensor, world: int, rank: int) -> dict[str, torch.Tensor]:
    """One accumulated step of a fresh 2L-32H model on this rank's shard of `rows`."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from tlc_export.train.budget import all_reduce

    torch.manual_seed(0)
    model = build_mlm(ModelSize(layers=2, hidden=32, heads=2), 300, 32, dropout=0.0)
    mod = MLMLoss(model)
    c = cfg()
    step = TrainStep(
        mod, make_optimizer(model, c, torch.device("cpu")), micro_batch_size=3, device=torch.device("cpu"),
        dtype=None, grad_clip=c.grad_clip, mask=MaskSpec(4, 300, (0, 1, 2, 3, 4)),
        forward=DDP(mod) if world > 1 else None, all_reduce=all_reduce if world > 1 else None,
        rank=rank, world_size=world,
    )
    step(rows, lr=1e-3, mask_seed=11)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rank(rank: int, tmp: str, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from tlc_export import distributed
    from tlc_export.pretrain.loop import pretrain_size

    distributed.init()
    data = make_data(Path(tmp) / f"tok{rank}")
    row = pretrain_size(SIZE, cfg(time_budget_s=1.0), data, Path(tmp) / "run" / SIZE.name, dropout=0.0)
    rows = torch.from_numpy(data.train_rows[:10].astype("int64"))
    params = _one_step(rows, 2, rank)
    torch.save(params, Path(tmp) / f"params{rank}.pt")
    (Path(tmp) / f"rank{rank}.json").write_text(json.dumps(row))
    import torch.distributed as dist

    dist.destroy_process_group()


def test_two_rank_gloo_ddp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    step_clock(monkeypatch, dt=1 / 32)  # installed before the fork: both ranks step on a 1/32 s clock
    ctx = mp.get_context("fork")  # children inherit the imported modules: no 10 s re-import
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, str(tmp_path), port)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    assert [p.exitcode for p in procs] == [0, 0]

    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert rows[0]["steps"] == rows[1]["steps"] == 32  # rank 0's clock stops both at the budget
    assert rows[0]["world_size"] == 2 and rows[0]["elapsed_s"] == rows[1]["elapsed_s"] == 1.0
    assert rows[1]["final_val_ppl"] is None  # rank 1 evaluated nothing
    out = tmp_path / "run" / SIZE.name
    steps = [c["step"] for c in read_jsonl(out / "curves.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == rows[0]["steps"]  # one writer, no duplicates
    assert (out / "checkpoint" / "model.safetensors").exists()

    # Two ranks with half the batch each take exactly the step of one process with the whole batch.
    ref = _one_step(torch.from_numpy(make_data(tmp_path / "tok").train_rows[:10].astype("int64")), 1, 0)
    for r in range(2):
        got = torch.load(tmp_path / f"params{r}.pt")
        for k in ref:
            assert torch.allclose(got[k], ref[k], atol=1e-6), (r, k)
