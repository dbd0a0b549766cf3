"""A `tlc plan` pilot is the first fraction of the real run: the full run resumes from its state and ends with
the weights and optimizer state of a run that never stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_pretrain_loop import SIZE, _snapshotting, _tensors, _tensors_final, cfg, make_data

from tlc_export.atomic import read_jsonl
from tlc_export.pretrain.loop import pretrain_size
from tlc_export.train.state import Counters


def _cfg():  # noqa: ANN202
    return cfg(time_budget_s=1.0, eval_every_s=0.125, checkpoint_every_s=0.25)


def test_pilot_then_full_run_equals_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _snapshotting(monkeypatch, tmp_path / "snap-pilot")  # 1/16 s steps
    out = tmp_path / "piloted" / SIZE.name
    pilot = pretrain_size(SIZE, _cfg(), make_data(tmp_path), out, dropout=0.1, stop_at_s=0.3)
    assert pilot["pilot"] is True and pilot["steps"] == 5 and pilot["elapsed_s"] == pytest.approx(5 / 16)
    assert not (out / "checkpoint").exists() and (out / "state").exists()
    saved = Counters(**json.loads((out / "state" / "trainer.json").read_text()))
    assert saved.step == 5
    pilot_curve = read_jsonl(out / "curves.jsonl")
    assert pilot_curve[-1]["step"] == 5  # the pilot's last point is measured where it stopped
    # The lr at the pilot's end is the full budget's schedule (warm-up 0.1 s, decay to 0 at 1.0 s), not a
    # schedule squeezed into the pilot.
    assert pilot_curve[-1]["lr"] == pytest.approx(1e-2 * (1.0 - 5 / 16) / 0.9)
    pilot_state = _tensors(out / "state")

    full = pretrain_size(SIZE, _cfg(), make_data(tmp_path), out, dropout=0.1)
    _snapshotting(monkeypatch, tmp_path / "snap-straight")
    straight = pretrain_size(SIZE, _cfg(), make_data(tmp_path), tmp_path / "straight" / SIZE.name, dropout=0.1)
    assert full["steps"] == straight["steps"] == 16

    later = sorted(p.name for p in (tmp_path / "snap-pilot").iterdir() if int(p.name[4:]) > 5)
    assert later, "the resumed run wrote no checkpoint"
    for name in later:
        a, b = _tensors(tmp_path / "snap-pilot" / name), _tensors(tmp_path / "snap-straight" / name)
        assert a.keys() == b.keys() and any(k.startswith("opt.") for k in a)
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), (name, k)
    fa = _tensors_final(out / "checkpoint")
    fb = _tensors_final(tmp_path / "straight" / SIZE.name / "checkpoint")
    for k in fa:
        assert torch.allclose(fa[k], fb[k], atol=1e-6), k
    assert full["final_val_loss"] == pytest.approx(straight["final_val_loss"], abs=1e-5)
    assert any(k.startswith("opt.") for k in pilot_state)


def test_pilot_state_equals_the_uninterrupted_run_at_the_same_step(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopping at a checkpointed step: the pilot's state is the uninterrupted run's state at that step."""
    _snapshotting(monkeypatch, tmp_path / "snap")
    pretrain_size(SIZE, _cfg(), make_data(tmp_path), tmp_path / "straight" / SIZE.name, dropout=0.1)
    out = tmp_path / "pilot" / SIZE.name
    pretrain_size(SIZE, _cfg(), make_data(tmp_path), out, dropout=0.1, stop_at_s=0.5)
    a, b = _tensors(out / "state"), _tensors(tmp_path / "snap" / "step0008")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
