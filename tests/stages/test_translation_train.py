"""Budgeted translation training: stops at the budget, time-based schedule, curves, kill -9 resume."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from tlc_export.atomic import read_jsonl
from tlc_export.recipe import parse_recipe
from tlc_export.tasks.translation import train as T
from tlc_export.tasks.translation.batching import encode_pairs
from tlc_export.tasks.translation.data import ParallelPair
from tlc_export.train.state import Counters

RECIPE = """\
translation:
  data: {kind: tsv, path: unused.tsv}
  tokenizer: {vocab_size: 300, min_frequency: 1}
  sizes: [{layers: 1, hidden: 32, heads: 2, ffn: 64}]
  max_source_length: 16
  max_target_length: 16
  dropout: 0.0
  train: {time_budget_s: 1.0, batch_tokens: 160, max_tokens_per_micro_batch: 96, lr: 0.003, eval_every_s: 0.3,
          checkpoint_every_s: 0.25, warmup_fraction: 0.1, eval_sentences: 4, seed: 5, threads: 1}
  decoding: {strategy: greedy, max_length: 12}
"""
WORDS = ["cat", "dog", "bird", "man", "woman", "child"]
PAIRS = [ParallelPair(f"the {a} sees the {b}", f"le {a} voit le {b}", f"{a}-{b}") for a in WORDS for b in WORDS]


class StepClock:
    """A fake clock: reading it costs nothing; time moves only by `advance` (each training step: `dt`)."""

    def __init__(self, dt: float) -> None:
        self.t, self.dt = 0.0, dt

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float | None = None) -> None:
        self.t += self.dt if seconds is None else seconds


def timed_step(fake: StepClock, step):  # noqa: ANN001, ANN201
    """`step` (translation.train.train_step) lasting exactly `fake.dt` on the fake clock."""
    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        fake.advance()
        return step(*args, **kwargs)

    return run


def use_step_clock(monkeypatch: pytest.MonkeyPatch, dt: float) -> StepClock:
    fake = StepClock(dt)
    monkeypatch.setattr(T, "clock", fake)
    monkeypatch.setattr(T, "train_step", timed_step(fake, T.train_step))
    return fake


def _setup():
    from tlc_export.tasks.translation.tokenizer import train_tokenizers

    cfg = parse_recipe(RECIPE).translation
    tok = train_tokenizers(PAIRS, cfg.tokenizer)
    train = encode_pairs(tok, PAIRS, cfg.max_source_length, cfg.max_target_length)
    return cfg, tok, train, T.dev_sample(PAIRS[::7], tok, cfg)


def _snapshotting(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Deterministic clock, and a copy of every state the loop saves, named by its step."""
    real_save = T.save_state

    def save_and_copy(target, model, optimizer, counters):  # noqa: ANN001, ANN202
        real_save(target, model, optimizer, counters)
        shutil.copytree(target, folder / f"step{counters.step:04d}", dirs_exist_ok=True)

    use_step_clock(monkeypatch, 0.05)
    monkeypatch.setattr(T, "save_state", save_and_copy)


def test_stops_at_budget_with_curves_and_checkpoint(tmp_path, monkeypatch, one_thread):
    use_step_clock(monkeypatch, 0.05)
    cfg, tok, train, dev = _setup()
    size = cfg.grid()[0]
    lrs: list[float] = []
    real_step = T.train_step
    monkeypatch.setattr(T, "train_step", lambda m, o, e, micro, lr, *a, **kw: (lrs.append(lr), real_step(m, o, e, micro, lr, *a, **kw))[1])
    row = T.train_translation_size(size, cfg, tok, train, dev, tmp_path / size.name)
    assert row["steps"] == 20 and row["elapsed_s"] == pytest.approx(1.0)  # 1.0 s of 0.05 s steps, nothing else
    assert lrs[0] < lrs[2] <= 0.003 and lrs[-1] < 0.003 * 0.1  # warm-up, then decay towards 0 at the budget
    points = read_jsonl(tmp_path / size.name / "curves.jsonl")
    assert [p["step"] for p in points] == sorted({p["step"] for p in points}) and points[0]["step"] == 0
    assert len(points) >= 4 and points[-1]["step"] == 20
    assert points[-1]["dev_loss"] < points[0]["dev_loss"]  # it learned something
    assert all(0 <= p["dev_bleu"] <= 100 and p["dev_sentences"] == 4 for p in points)
    assert "tok:13a" in points[-1]["bleu_signature"] and row["final_dev_bleu"] == points[-1]["dev_bleu"]
    ckpt = tmp_path / size.name / "checkpoint"
    assert (ckpt / "model.safetensors").is_file() and not (tmp_path / size.name / "state").exists()
    assert T.train_translation_size(size, cfg, tok, train, dev, tmp_path / size.name) == row  # finished: reused
    from transformers import MarianMTModel

    assert MarianMTModel.from_pretrained(str(ckpt)).config.d_model == 32


def _train_child(tmp: str, stop_at: int) -> None:
    torch.set_num_threads(1)
    cfg, tok, train, dev = _setup()

    def die(c: Counters) -> None:
        if c.step == stop_at:  # trained past the last checkpoint: this work is lost to the kill
            (Path(tmp) / "reached").write_text(str(c.step))
            os.kill(os.getpid(), signal.SIGKILL)  # the same signal from outside; no waiting, no polling

    T.train_translation_size(cfg.grid()[0], cfg, tok, train, dev, Path(tmp) / "killed", on_step=die)


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {f"w.{k}": v for k, v in load_file(folder / "model.safetensors").items()}
    opt = torch.load(folder / "optimizer.pt", weights_only=True)
    for pid, st in opt["state"].items():
        for k, v in st.items():
            out[f"opt.{pid}.{k}"] = torch.as_tensor(v)
    return out


def test_resume_after_kill_9_matches_an_uninterrupted_run(tmp_path, monkeypatch, one_thread):
    """Killed with SIGKILL after a checkpoint, resumed: weights and optimizer state at every later
    checkpoint, and the final weights, equal those of a run that was never interrupted."""
    _snapshotting(monkeypatch, tmp_path / "snap-killed")
    child = mp.get_context("fork").Process(target=_train_child, args=(str(tmp_path), 12))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL and (tmp_path / "reached").read_text() == "12"
    saved = Counters(**json.loads((tmp_path / "killed" / "state" / "trainer.json").read_text()))
    assert 0 < saved.step < 12

    cfg, tok, train, dev = _setup()
    size = cfg.grid()[0]
    seen: list[tuple[int, int]] = []
    resumed = T.train_translation_size(size, cfg, tok, train, dev, tmp_path / "killed",
                                       on_step=lambda c: seen.append((c.step, c.data_position)))
    assert seen[0][0] == saved.step + 1 and seen[0][1] > saved.data_position
    steps = [p["step"] for p in read_jsonl(tmp_path / "killed" / "curves.jsonl")]
    assert steps == sorted(set(steps)), "curve points of lost work were not dropped"

    _snapshotting(monkeypatch, tmp_path / "snap-straight")
    straight = T.train_translation_size(size, cfg, tok, train, dev, tmp_path / "straight")
    assert resumed["steps"] == straight["steps"] == 20
    after = sorted(p.name for p in (tmp_path / "snap-killed").iterdir() if int(p.name[4:]) > 12)
    assert after, "no checkpoint was written after the resume"
    for name in after:
        a, b = _tensors(tmp_path / "snap-killed" / name), _tensors(tmp_path / "snap-straight" / name)
        assert a.keys() == b.keys() and any(k.startswith("opt.") for k in a)
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), (name, k)
    from safetensors.torch import load_file

    fa = load_file(tmp_path / "killed" / "checkpoint" / "model.safetensors")
    fb = load_file(tmp_path / "straight" / "checkpoint" / "model.safetensors")
    assert fa.keys() == fb.keys()
    for k in fa:
        assert torch.allclose(fa[k], fb[k], atol=1e-6), k
    assert resumed["final_dev_loss"] == pytest.approx(straight["final_dev_loss"], abs=1e-5)
