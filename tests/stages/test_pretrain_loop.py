"""The budgeted pretraining loop: budget and schedule, clock exclusions, kill -9 resume, final checkpoint."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedTokenizerFast

from tlc_export.atomic import read_jsonl
from tlc_export.config.models import ModelSize
from tlc_export.config.pretrain import PretrainConfig
from tlc_export.data.mlm import pack_sequences
from tlc_export.pretrain.loop import PretrainData, pretrain_size
from tlc_export.train.state import Counters

SIZE = ModelSize(layers=2, hidden=32, heads=2)
SEQ = 32
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def make_tokenizer(folder: Path, vocab: int = 300) -> PreTrainedTokenizerFast:
    words = SPECIALS + [f"w{i}" for i in range(vocab - len(SPECIALS))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        mask_token="<mask>",
    )
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def make_ids(n_tokens: int, vocab: int = 45, seed: int = 0) -> np.ndarray:
    """Documents counting upwards through a few of the 300 ids: learnable in a handful of steps."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < n_tokens:
        start, length = rng.integers(5, vocab), rng.integers(10, 40)
        out.extend(5 + (start - 5 + np.arange(length)) % (vocab - 5))
        out.append(2)
    return np.asarray(out[:n_tokens], dtype=np.int32)


def make_data(tmp: Path) -> PretrainData:
    tok = make_tokenizer(tmp / "tokenizer")
    train = pack_sequences(make_ids(40_000), SEQ, 0, 2)
    val = pack_sequences(make_ids(3_000, seed=1), SEQ, 0, 2)
    return PretrainData(train, val, tok, 0.15)


def cfg(**kw: object) -> PretrainConfig:
    base = dict(time_budget_s=2.0, batch_size=16, micro_batch_size=8, lr=1e-2, eval_every_s=0.5,
                eval_batches=2, checkpoint_every_s=0.5, warmup_fraction=0.1, seed=3, threads=1)
    base.update(kw)
    return PretrainConfig(**base)


class StepClock:
    """A fake clock: reading it costs nothing; time moves only by `advance` (each training step: `dt`).
    Whatever happens between steps (evaluation, checkpoints) takes no time on it unless a test advances it
    on purpose. Powers of two for `dt` reach budgets exactly."""

    def __init__(self, dt: float) -> None:
        self.t, self.dt = 0.0, dt

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float | None = None) -> None:
        self.t += self.dt if seconds is None else seconds


def use_step_clock(monkeypatch: pytest.MonkeyPatch, dt: float) -> StepClock:
    """The loop reads `fake`, and every training step (not the warm-up) lasts exactly `dt` on it."""
    import tlc_export.pretrain.loop as loop

    fake = StepClock(dt)

    class TimedStep(loop.TrainStep):
        def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
            fake.advance()
            return super().__call__(*args, **kwargs)

    monkeypatch.setattr(loop, "clock", fake)
    monkeypatch.setattr(loop, "TrainStep", TimedStep)
    return fake


def step_clock(monkeypatch: pytest.MonkeyPatch, dt: float = 1 / 32) -> StepClock:
    """`use_step_clock` with the suite's default step of 1/32 s."""
    return use_step_clock(monkeypatch, dt)


def test_budget_schedule_and_final_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    step_clock(monkeypatch, dt=1 / 32)
    data = make_data(tmp_path)
    lrs: list[float] = []
    row = pretrain_size(SIZE, cfg(), data, tmp_path / "run" / SIZE.name, dropout=0.0,
                        on_step=lambda c: lrs.append(c.elapsed_s))
    assert row["elapsed_s"] == 2.0 and row["steps"] == 64  # 2 s of 1/32 s steps, not one more
    assert row["steps"] == len(lrs) and row["tokens"] == row["steps"] * 16 * SEQ
    curves = read_jsonl(tmp_path / "run" / SIZE.name / "curves.jsonl")
    assert curves[0]["step"] == 0 and curves[-1]["step"] == row["steps"]
    assert [c["step"] for c in curves] == [0, 16, 32, 48, 64]  # eval_every_s 0.5: every 16 steps, then the end
    assert curves[-1]["lr"] == 0.0 and curves[-1]["elapsed_s"] == 2.0
    assert max(c["lr"] for c in curves) > 1e-3  # it did warm up to near the peak
    assert curves[-1]["val_ppl"] < 0.7 * curves[0]["val_ppl"]  # it learned the counting pattern
    assert {"size", "flops", "train_loss", "val_loss", "tokens", "wall_time"} <= set(curves[-1])

    ckpt = tmp_path / "run" / SIZE.name / "checkpoint"
    assert not (tmp_path / "run" / SIZE.name / "state").exists()
    model = AutoModelForMaskedLM.from_pretrained(ckpt).eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    assert type(model).__name__ == "RobertaPreLayerNormForMaskedLM" and tok.mask_token_id == 4
    enc = tok("w10 w11 <mask> w13 w14", return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == 300 and torch.isfinite(logits).all()

    # Finished sizes are skipped: the same row comes back without a single step.
    def no_training(_c: Counters) -> None:
        raise AssertionError("a finished size trained again")

    again = pretrain_size(SIZE, cfg(), data, tmp_path / "run" / SIZE.name, dropout=0.0, on_step=no_training)
    assert again == json.loads((ckpt / "done.json").read_text())


def test_eval_and_checkpoint_time_not_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluations and checkpoints each take 10 s of the clock; none of it may reach the training time."""
    import tlc_export.pretrain.loop as loop

    clock = step_clock(monkeypatch, dt=1 / 16)
    data = make_data(tmp_path)
    real_evaluate, real_save = loop.evaluate, loop.save_state
    calls = {"evaluate": 0, "save_state": 0}

    def slow_evaluate(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["evaluate"] += 1
        clock.t += 10.0
        return real_evaluate(*args, **kwargs)

    def slow_save(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["save_state"] += 1
        clock.t += 10.0
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", slow_evaluate)
    monkeypatch.setattr(loop, "save_state", slow_save)
    c = cfg(time_budget_s=1.5, eval_every_s=0.25, eval_batches=4, checkpoint_every_s=0.5)
    row = pretrain_size(SIZE, c, data, tmp_path / SIZE.name, dropout=0.0)
    curves = read_jsonl(tmp_path / SIZE.name / "curves.jsonl")
    assert row["elapsed_s"] == 1.5 and row["steps"] == 24  # the budget in steps, untouched by 10 s pauses
    assert [p["elapsed_s"] for p in curves] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert calls == {"evaluate": 7, "save_state": 2}  # checkpoints at 0.5 and 1.0 s of training


def _snapshotting(monkeypatch: pytest.MonkeyPatch, folder: Path, dt: float = 1 / 16) -> None:
    """Deterministic clock, and a copy of every checkpoint the loop writes, named by its step."""
    import shutil

    import tlc_export.pretrain.loop as loop

    real_save = loop.save_state

    def save_and_copy(target, model, optimizer, counters):  # noqa: ANN001, ANN202
        real_save(target, model, optimizer, counters)
        shutil.copytree(target, folder / f"step{counters.step:04d}", dirs_exist_ok=True)

    step_clock(monkeypatch, dt=dt)
    monkeypatch.setattr(loop, "save_state", save_and_copy)


def _resume_cfg() -> PretrainConfig:
    return cfg(time_budget_s=1.0, eval_every_s=0.3, checkpoint_every_s=0.25)


def _train_child(tmp: str, stop_at: int) -> None:
    torch.set_num_threads(1)

    def die(c: Counters) -> None:
        if c.step == stop_at:  # trained past the last checkpoint: this work is lost to the kill
            (Path(tmp) / "reached").write_text(str(c.step))
            os.kill(os.getpid(), signal.SIGKILL)  # the same signal from outside; no waiting, no polling

    pretrain_size(SIZE, _resume_cfg(), make_data(Path(tmp)), Path(tmp) / "killed" / SIZE.name, dropout=0.0, on_step=die)


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {f"w.{k}": v for k, v in load_file(folder / "model.safetensors").items()}
    opt = torch.load(folder / "optimizer.pt", weights_only=True)
    for pid, st in opt["state"].items():
        for k, v in st.items():
            out[f"opt.{pid}.{k}"] = torch.as_tensor(v)
    return out


def test_resume_after_kill_9_matches_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed with SIGKILL after a checkpoint, resumed: weights and optimizer state at the same step, and
    the final weights, equal those of a run that was never interrupted."""
    _snapshotting(monkeypatch, tmp_path / "snap-killed")
    child = mp.get_context("fork").Process(target=_train_child, args=(str(tmp_path), 10))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL and (tmp_path / "reached").read_text() == "10"
    out = tmp_path / "killed" / SIZE.name
    saved = Counters(**json.loads((out / "state" / "trainer.json").read_text()))
    assert saved.step == 8  # the checkpoint every 0.25 s of 1/16 s steps before step 10

    seen: list[tuple[int, float, int]] = []
    resumed = pretrain_size(SIZE, _resume_cfg(), make_data(tmp_path), out, dropout=0.0,
                            on_step=lambda c: seen.append((c.step, c.elapsed_s, c.data_position)))
    assert seen[0][0] == saved.step + 1 and seen[0][1] > saved.elapsed_s and seen[0][2] == saved.data_position + 16
    steps = [c["step"] for c in read_jsonl(out / "curves.jsonl")]
    assert steps == sorted(set(steps)), "curve points of lost work were not dropped"

    _snapshotting(monkeypatch, tmp_path / "snap-straight")
    straight = pretrain_size(SIZE, _resume_cfg(), make_data(tmp_path), tmp_path / "straight" / SIZE.name, dropout=0.0)
    assert resumed["steps"] == straight["steps"] == 16  # 1.0 s of 1/16 s steps
    after = sorted(p.name for p in (tmp_path / "snap-killed").iterdir() if int(p.name[4:]) > 10)
    assert after, "no checkpoint was written after the resume"
    for name in after:
        a, b = _tensors(tmp_path / "snap-killed" / name), _tensors(tmp_path / "snap-straight" / name)
        assert a.keys() == b.keys() and any(k.startswith("opt.") for k in a)
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), (name, k)
    fa, fb = (_tensors_final(p / "checkpoint") for p in (out, tmp_path / "straight" / SIZE.name))
    for k in fa:
        assert torch.allclose(fa[k], fb[k], atol=1e-6), k
    assert resumed["final_val_loss"] == pytest.approx(straight["final_val_loss"], abs=1e-5)


def _tensors_final(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_oom_on_the_first_step_halves_the_micro_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from tlc_export.pretrain.loss import MLMLoss

    real_forward = MLMLoss.forward
    calls: list[int] = []

    def forward(self, ids, labels):  # noqa: ANN001, ANN202
        if torch.is_grad_enabled():
            calls.append(len(ids))
            if len(ids) > 4:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(self, ids, labels)

    monkeypatch.setattr(MLMLoss, "forward", forward)
    step_clock(monkeypatch)
    console = Console(record=True, width=200)
    row = pretrain_size(SIZE, cfg(time_budget_s=0.5, micro_batch_size=8), make_data(tmp_path), tmp_path / SIZE.name,
                        dropout=0.0, console=console)
    assert row["micro_batch_size"] == 4 and row["steps"] > 1
    assert calls[0] == 8 and set(calls[1:]) == {4}
    assert "micro-batch halved to 4" in console.export_text()
    state_free = json.loads((tmp_path / SIZE.name / "checkpoint" / "done.json").read_text())
    assert state_free["micro_batch_size"] == 4


def test_a_later_oom_is_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tlc_export.pretrain.loss import MLMLoss

    real_forward = MLMLoss.forward
    calls: list[int] = []

    def forward(self, ids, labels):  # noqa: ANN001, ANN202
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) > 6:  # third step (2 micro-batches each)
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(self, ids, labels)

    monkeypatch.setattr(MLMLoss, "forward", forward)
    step_clock(monkeypatch)
    with pytest.raises(torch.OutOfMemoryError):
        pretrain_size(SIZE, cfg(time_budget_s=5.0), make_data(tmp_path), tmp_path / SIZE.name, dropout=0.0)


def test_step_grid_evaluates_at_the_same_steps_and_resumes_without_repeats(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    step_clock(monkeypatch)
    data = make_data(tmp_path)
    out = tmp_path / SIZE.name
    # A checkpoint at every step: the state resumed from is one taken right after a grid evaluation.
    c = cfg(time_budget_s=1.5, eval_every_steps=3, eval_every_s=100.0, checkpoint_every_s=1e-6)

    class Interrupt(Exception):
        pass

    def stop_after_checkpoint(counters: Counters) -> None:
        if counters.step > 6 and counters.step % 3 == 1:  # one step past an evaluated, checkpointed step
            raise Interrupt

    with pytest.raises(Interrupt):
        pretrain_size(SIZE, c, data, out, dropout=0.0, on_step=stop_after_checkpoint)
    saved = Counters(**json.loads((out / "state" / "trainer.json").read_text()))
    assert saved.step > 0
    row = pretrain_size(SIZE, c, data, out, dropout=0.0)
    steps = [p["step"] for p in read_jsonl(out / "curves.jsonl")]
    assert steps == sorted(set(steps)), steps  # nothing evaluated twice across the resume
    assert all(s % 3 == 0 for s in steps[:-1]) and steps[-1] == row["steps"]
    assert steps[:-1] == list(range(0, steps[-2] + 1, 3))  # every grid step, none skipped


@pytest.mark.parametrize("split", ["train", "val"])
def test_stage_reports_missing_data(tmp_path: Path, split: str) -> None:
    from tlc_export.data.token_files import TokenSplit
    from tlc_export.errors import StageError

    with pytest.raises(StageError, match=rf"{split}\.json: missing; run the data stage"):
        TokenSplit.open(tmp_path / "tokens", split)
