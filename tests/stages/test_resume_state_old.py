"""A kill between `atomic_path`'s two renames leaves only `.state.old`: resume from it, not from step 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_pretrain_loop import SIZE, cfg, make_data, use_step_clock

from tlc_export import atomic
from tlc_export.train import budget
from tlc_export.train.state import Counters


class Killed(BaseException):
    """Stands for SIGKILL: nothing below catches it, and no clean-up of the loop runs."""


def test_recover_folder_puts_the_previous_version_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state"
    with atomic.atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "v").write_text("1")
    real_rename = Path.rename
    calls: list[Path] = []

    def rename(self: Path, dst):  # noqa: ANN001, ANN202 - the second rename (new version in) never happens
        calls.append(self)
        if len(calls) == 2:
            raise Killed
        return real_rename(self, dst)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(Killed), atomic.atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "v").write_text("2")
    monkeypatch.setattr(Path, "rename", real_rename)
    assert not target.exists() and (tmp_path / ".state.old" / "v").read_text() == "1"
    assert atomic.recover_folder(target) is True
    assert (target / "v").read_text() == "1" and not (tmp_path / ".state.old").exists()
    assert atomic.recover_folder(target) is False  # nothing to recover: the folder is there


def _cfg():  # noqa: ANN202
    return cfg(time_budget_s=1.0, eval_every_s=0.3, checkpoint_every_s=0.25)


def test_pretraining_resumes_from_state_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlc_export.pretrain.loop as loop

    use_step_clock(monkeypatch, 0.0625)  # exact in binary: the laps add up to the budget exactly
    real_save, real_rename = loop.save_state, Path.rename
    saves: list[int] = []

    def save_then_die_between_renames(target, model, optimizer, counters):  # noqa: ANN001, ANN202
        saves.append(counters.step)
        if len(saves) < 2:
            return real_save(target, model, optimizer, counters)
        renames: list[Path] = []

        def rename(self: Path, dst):  # noqa: ANN001, ANN202
            renames.append(self)
            if len(renames) == 2:  # the old state is aside, the new one not yet in: killed here
                raise Killed
            return real_rename(self, dst)

        monkeypatch.setattr(Path, "rename", rename)
        try:
            real_save(target, model, optimizer, counters)
        finally:
            monkeypatch.setattr(Path, "rename", real_rename)

    monkeypatch.setattr(loop, "save_state", save_then_die_between_renames)
    out = tmp_path / "killed" / SIZE.name
    with pytest.raises(Killed):
        loop.pretrain_size(SIZE, _cfg(), make_data(tmp_path), out, dropout=0.0)
    assert not (out / "state").exists() and (out / ".state.old").is_dir()
    saved = Counters(**json.loads((out / ".state.old" / "trainer.json").read_text()))
    assert saved.step == saves[0] > 0
    old_weights = load_file(out / ".state.old" / "model.safetensors")
    old_opt = torch.load(out / ".state.old" / "optimizer.pt", weights_only=True)["state"]

    monkeypatch.setattr(loop, "save_state", real_save)
    loaded: dict[str, torch.Tensor] = {}
    loaded_opt: dict = {}
    real_load = budget.load_state  # the budgeted trainer resumes every family

    def load_and_look(source, model, optimizer, restore_rng=True):  # noqa: ANN001, ANN202
        c = real_load(source, model, optimizer, restore_rng=restore_rng)
        loaded.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        loaded_opt.update({i: {k: torch.as_tensor(v).clone() for k, v in st.items()}
                           for i, st in optimizer.state_dict()["state"].items()})
        return c

    monkeypatch.setattr(budget, "load_state", load_and_look)
    first: list[int] = []
    resumed = loop.pretrain_size(SIZE, _cfg(), make_data(tmp_path), out, dropout=0.0,
                                 on_step=lambda c: first.append(c.step))
    assert first[0] == saved.step + 1  # resumed from the recovered state, not from step 0
    shared = [k for k in old_weights if k in loaded]
    assert len(shared) > 10 and all(torch.equal(loaded[k], old_weights[k]) for k in shared)
    assert loaded_opt.keys() == old_opt.keys() and len(old_opt) > 10
    for i, st in old_opt.items():
        assert all(torch.equal(loaded_opt[i][k], torch.as_tensor(v)) for k, v in st.items()), i

    straight = loop.pretrain_size(SIZE, _cfg(), make_data(tmp_path), tmp_path / "straight" / SIZE.name, dropout=0.0)
    assert resumed["steps"] == straight["steps"] == 16  # 1.0 s of 0.0625 s steps
    a = load_file(out / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "straight" / SIZE.name / "checkpoint" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
