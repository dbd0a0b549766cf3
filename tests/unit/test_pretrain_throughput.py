"""runtime_bench.pretrain_throughput: the plain peer does ours' work (device masks, clipping), dynamo is reset
once, the MFU column is the model-FLOPs one. torch.compile is replaced by a recorder: nothing compiles here."""

from __future__ import annotations

import pytest
import torch

from runtime_bench import pretrain_throughput as pt
from tlc_export.pretrain import masking


def test_plain_peer_does_ours_work_and_dynamo_is_reset_once(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    calls = {"reset": 0, "clip": 0, "mask": 0, "compile": 0}
    monkeypatch.setattr(torch._dynamo, "reset", lambda: calls.__setitem__("reset", calls["reset"] + 1))
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(params, max_norm, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["clip"] += 1
        return real_clip(params, max_norm, *a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    real_call = masking.DeviceMasker.__call__

    def mask(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["mask"] += 1
        return real_call(self, *a, **kw)

    monkeypatch.setattr(masking.DeviceMasker, "__call__", mask)
    monkeypatch.setattr(torch, "compile", lambda m, **kw: (calls.__setitem__("compile", calls["compile"] + 1), m)[1])
    result = pt.main(["--sizes", "1L-64H", "--batch", "4", "--micro", "2", "--seq", "16", "--vocab", "64",
                      "--steps", "2", "--warmup", "1", "--device", "cpu", "--compile", "on", "--threads", "1"])
    (row,) = result["results"]
    assert set(pt.VARIANTS) <= set(row) and calls["compile"] == 2  # ours and plain_compiled
    # One reset before the variants and one to drop the graphs afterwards; never one per variant.
    assert calls["reset"] == 2
    # Every step of every variant: 1 first step for plain (+compiled), warm-up 1, 2 rounds × 2 timed steps.
    plain_steps = 2 * (1 + 1 + 4)
    ours_steps = 1 + 4
    assert calls["clip"] == plain_steps + ours_steps
    assert calls["mask"] >= plain_steps + ours_steps  # ours also masks in its warm-up
    assert row["ours"]["model_flops_mfu"] > 0 and "mfu" not in row["ours"]
    assert row["ours"]["unique_graphs"] == 0 and row["plain"]["unique_graphs"] is None
    assert row["recompiles_after_warmup"] == 0
    assert "model-FLOPs MFU" in capsys.readouterr().out
