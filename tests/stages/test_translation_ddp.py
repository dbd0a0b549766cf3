"""Two-process gloo DDP for translation: one shared clock (the same steps on both ranks), one writer,
and a step whose summed gradients equal one process's over all the step's micro-batches."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
from pathlib import Path

import pytest
import torch
from test_translation_train import PAIRS, RECIPE, StepClock, timed_step

from tlc_export.atomic import read_jsonl
from tlc_export.recipe import parse_recipe
from tlc_export.tasks.translation import train as T
from tlc_export.tasks.translation.batching import encode_pairs
from tlc_export.tasks.translation.model import build_translation_model
from tlc_export.tasks.translation.tokenizer import train_tokenizers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup():
    cfg = parse_recipe(RECIPE).translation
    tok = train_tokenizers(PAIRS, cfg.tokenizer)
    return cfg, tok, encode_pairs(tok, PAIRS, cfg.max_source_length, cfg.max_target_length)


def _one_step(world: int, rank: int) -> tuple[float, dict[str, torch.Tensor]]:
    """One step of a fresh model over the first step's micro-batches (this rank's share of them)."""
    cfg, tok, train = _setup()
    torch.manual_seed(0)
    model = build_translation_model(cfg.grid()[0], cfg, source_vocab=len(tok.source), seed=1)
    forward = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        forward = DDP(model)
    opt = T.make_optimizer(model, cfg.train, torch.device("cpu"))
    micro, _ = T.StepPlan(train, 96, 400, seed=5, world=2).next_step(0)
    assert len(micro) >= 3  # uneven shares: rank 0 takes more micro-batches than rank 1
    loss, _ = T.train_step(model, opt, train, micro, 3e-3, cfg, torch.device("cpu"), None, forward=forward, rank=rank,
                      world=world)
    return loss, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rank(rank: int, tmp: str, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from tlc_export import distributed

    distributed.init()
    fake = StepClock(0.05 if rank == 0 else 0.02)  # rank 1 is "faster": rank 0's clock must rule
    T.clock, T.train_step = fake, timed_step(fake, T.train_step)
    cfg, tok, train = _setup()
    dev = T.dev_sample(PAIRS[::7], tok, cfg) if rank == 0 else None
    row = T.train_translation_size(cfg.grid()[0], cfg, tok, train, dev, Path(tmp) / "run")
    loss, params = _one_step(2, rank)
    torch.save(params, Path(tmp) / f"params{rank}.pt")
    (Path(tmp) / f"rank{rank}.json").write_text(json.dumps({**row, "one_step_loss": loss}))
    import torch.distributed as dist

    dist.destroy_process_group()


def test_two_rank_gloo_ddp(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")  # children inherit the imported modules: no re-import
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, str(tmp_path), port)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]

    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert rows[0]["steps"] == rows[1]["steps"] == 20  # 1.0 s budget of rank 0's 0.05 s steps
    assert rows[0]["world_size"] == 2 and rows[1]["final_dev_bleu"] is None  # rank 1 evaluated nothing
    steps = [c["step"] for c in read_jsonl(tmp_path / "run" / "curves.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # one writer, no duplicates
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "state").exists()

    # Two ranks with their shares of the micro-batches take exactly the step of one process with all of them.
    ref_loss, ref = _one_step(1, 0)
    for r in range(2):
        assert rows[r]["one_step_loss"] == pytest.approx(ref_loss, rel=1e-5)
        got = torch.load(tmp_path / f"params{r}.pt")
        for k in ref:
            assert torch.allclose(got[k], ref[k], atol=1e-6), (r, k)
