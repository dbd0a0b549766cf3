"""`pretrain.keep_checkpoints_at`: loadable HF checkpoints at fractions of the budget, evaluated when kept,
equal to the training state at that step, and surviving a resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_pretrain_loop import SIZE, _snapshotting, cfg, make_data
from transformers import AutoModelForMaskedLM, AutoTokenizer

from tlc_export.atomic import read_jsonl
from tlc_export.pretrain.loop import pretrain_size
from tlc_export.train.state import Counters


def _keep_cfg():  # noqa: ANN202
    # Steps of 0.05 s on the step clock: kept after steps 6 and 11 (0.3 s, 0.55 s), the final at the end.
    return cfg(time_budget_s=1.0, eval_every_s=0.3, checkpoint_every_s=10.0, keep_checkpoints_at=[0.27, 0.52, 1.0])


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_kept_checkpoints_load_in_plain_transformers_and_are_the_weights_at_that_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snaps = tmp_path / "snap"
    _snapshotting(monkeypatch, snaps, dt=0.05)  # every saved training state copied, named by its step
    out = tmp_path / SIZE.name
    row = pretrain_size(SIZE, _keep_cfg(), make_data(tmp_path), out, dropout=0.0)
    kept = row["kept_checkpoints"]
    assert [k["tag"] for k in kept] == ["k27", "k52", "k100"]
    assert [k["step"] for k in kept] == [6, 11, row["steps"]] and kept[-1]["final"] is True
    assert kept[-1]["checkpoint"] == f"{SIZE.name}/checkpoint"
    curve = {p["kept"]: p for p in read_jsonl(out / "curves.jsonl") if p.get("kept")}
    steps = [p["step"] for p in read_jsonl(out / "curves.jsonl")]
    assert steps == sorted(set(steps))  # the kept evaluation is not repeated by the regular one
    for k in kept[:2]:
        folder = out / "kept" / k["tag"]
        assert json.loads((folder / "kept.json").read_text())["val_ppl"] == k["val_ppl"] == curve[k["tag"]]["val_ppl"]
        model = AutoModelForMaskedLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        assert type(model).__name__ == "RobertaPreLayerNormForMaskedLM"
        assert model.config.num_hidden_layers == SIZE.layers and model.config.hidden_size == SIZE.hidden
        # Reference: the training state the loop saved at the same step (its own safetensors file).
        state = load_file(snaps / f"step{k['step']:04d}" / "model.safetensors")
        ours = model.state_dict()
        shared = [n for n in state if n in ours]
        assert len(shared) > 10
        for n in shared:
            assert torch.equal(ours[n], state[n]), n
        ids = torch.tensor([[tok.bos_token_id, 7, 8, 9, tok.mask_token_id, tok.eos_token_id]])
        assert torch.isfinite(model(input_ids=ids).logits).all()
    final = load_file(out / "checkpoint" / "model.safetensors")
    early = load_file(out / "kept" / "k27" / "model.safetensors")
    assert any(not torch.equal(final[n], early[n]) for n in final if n in early)  # training went on


def test_kept_checkpoints_survive_a_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _snapshotting(monkeypatch, tmp_path / "snap", dt=0.05)
    out = tmp_path / SIZE.name

    class Interrupt(Exception):
        pass

    def stop(c: Counters) -> None:
        if c.step == 8:  # after the 25 % checkpoint, before the 50 % one
            raise Interrupt

    with pytest.raises(Interrupt):
        pretrain_size(SIZE, _keep_cfg(), make_data(tmp_path), out, dropout=0.0, on_step=stop)
    assert (out / "kept" / "k27" / "kept.json").exists() and not (out / "kept" / "k52").exists()
    saved = Counters(**json.loads((out / "state" / "trainer.json").read_text()))
    assert saved.step == 6  # the state was saved when the checkpoint was kept: the resume starts after it
    before = _digest(out / "kept" / "k27")
    row = pretrain_size(SIZE, _keep_cfg(), make_data(tmp_path), out, dropout=0.0)
    assert _digest(out / "kept" / "k27") == before  # not overwritten
    assert [k["tag"] for k in row["kept_checkpoints"]] == ["k27", "k52", "k100"]
    assert [k["step"] for k in row["kept_checkpoints"]] == [6, 11, row["steps"]]
    assert sum(1 for p in read_jsonl(out / "curves.jsonl") if p.get("kept")) == 2
