"""torch.compile in the pretraining loop: compiled once per size before the clock, never again.

Runs dynamo with the `aot_eager` backend: recompiles are decided by dynamo's guards, which do not
depend on the backend, and aot_eager compiles in seconds where inductor's C++ backend takes about
a minute per graph on this CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_pretrain_loop import cfg, make_data, step_clock

from tlc_export.config.models import ModelSize
from tlc_export.pretrain.loop import pretrain_size
from tlc_export.train.state import Counters


class Crash(RuntimeError):
    pass


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_no_recompile_after_warmup_over_steps_sizes_and_a_resume(tmp_path: Path, one_thread: None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    step_clock(monkeypatch, dt=1 / 16)
    data = make_data(tmp_path)
    # batch 12 with micro-batch 8: the last micro-batch is short and must be padded, not recompiled.
    c = cfg(time_budget_s=1.25, batch_size=12, micro_batch_size=8, compile=True, compile_backend="aot_eager",
            checkpoint_every_s=0.3, eval_every_s=0.6)
    rows = []
    for size in (ModelSize(layers=1, hidden=32, heads=2), ModelSize(layers=2, hidden=48, heads=2)):
        graphs: list[int] = []
        out = tmp_path / "run" / size.name
        if size.layers == 2:
            def crash(counters: Counters, graphs: list[int] = graphs, out: Path = out) -> None:
                graphs.append(_graphs())
                if counters.elapsed_s > 0.6 and (out / "state").exists():
                    raise Crash("simulated crash after a checkpoint")

            before = _graphs()
            with pytest.raises(Crash):
                pretrain_size(size, c, data, out, dropout=0.0, on_step=crash)
            assert graphs[0] - before == 1
            assert len(set(graphs)) == 1, f"recompiled during the interrupted run: {graphs}"
            graphs.clear()
        before = _graphs()
        row = pretrain_size(size, c, data, out, dropout=0.0, on_step=lambda _c, g=graphs: g.append(_graphs()))
        assert len(graphs) >= 3 and len(set(graphs)) == 1, f"{size.name}: graphs compiled during training {graphs}"
        # One graph for the whole step: no graph break in the loss (static masked head) and one
        # micro-batch shape (the short last micro-batch is padded).
        assert graphs[0] - before == 1
        assert row["recompiles_after_warmup"] == 0 and row["compiled"] is True
        assert row["compile_s"] > 0  # measured and reported ...
        assert row["elapsed_s"] == 1.25  # ... not spent from the budget (1/16 s steps on the training clock)
        rows.append(row)
    assert rows[1]["steps"] == 20 and rows[1]["micro_batch_size"] == 8
    torch._dynamo.reset()
