"""The budgeted pretraining loop: budget and schedule, clock exclusions, kill -9 resume, final checkpoint."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
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
from tlc_export.pretrain.state import Counters

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


def test_budget_schedule_and_final_checkpoint(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    lrs: list[float] = []
    row = pretrain_size(SIZE, cfg(), data, tmp_path / "run" / SIZE.name, dropout=0.0,
                        on_step=lambda c: lrs.append(c.elapsed_s))
    assert 2.0 <= row["elapsed_s"] < 2.0 + 0.5
    assert row["steps"] == len(lrs) and row["tokens"] == row["steps"] * 16 * SEQ
    curves = read_jsonl(tmp_path / "run" / SIZE.name / "curves.jsonl")
    assert curves[0]["step"] == 0 and curves[-1]["step"] == row["steps"]
    assert curves[-1]["lr"] == 0.0 and curves[-1]["elapsed_s"] >= 2.0
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
    # Finished sizes are skipped: the same row comes back without training.
    t0 = time.perf_counter()
    again = pretrain_size(SIZE, cfg(), data, tmp_path / "run" / SIZE.name, dropout=0.0)
    assert again == json.loads((ckpt / "done.json").read_text()) and time.perf_counter() - t0 < 1.0


def test_eval_and_checkpoint_time_not_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlc_export.pretrain.loop as loop

    data = make_data(tmp_path)
    real_evaluate = loop.evaluate

    def slow_evaluate(*args, **kwargs):  # evaluation made deliberately slow: it must stay off the clock
        time.sleep(0.3)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", slow_evaluate)
    c = cfg(time_budget_s=1.5, eval_every_s=0.25, eval_batches=4, checkpoint_every_s=0.1)
    t0 = time.perf_counter()
    row = pretrain_size(SIZE, c, data, tmp_path / SIZE.name, dropout=0.0)
    wall = time.perf_counter() - t0
    evals = len(read_jsonl(tmp_path / SIZE.name / "curves.jsonl"))
    assert evals >= 6
    assert 1.5 <= row["elapsed_s"] < 1.5 + 0.4
    # ≥ 6 evaluations × 0.3 s of sleep happened, none of it on the training clock.
    assert wall > row["elapsed_s"] + 0.3 * evals - 0.05, (wall, row["elapsed_s"], evals)


def _train_child(tmp: str) -> None:
    torch.set_num_threads(1)
    pretrain_size(SIZE, cfg(time_budget_s=4.0), make_data(Path(tmp)), Path(tmp) / SIZE.name, dropout=0.0)


def test_resume_after_kill_9(tmp_path: Path) -> None:
    out = tmp_path / SIZE.name
    child = mp.get_context("fork").Process(target=_train_child, args=(str(tmp_path),))
    child.start()
    state = out / "state" / "trainer.json"
    deadline = time.monotonic() + 60
    while not state.exists() and time.monotonic() < deadline and child.is_alive():
        time.sleep(0.05)
    assert state.exists(), "no checkpoint written before the deadline"
    time.sleep(0.7)  # let it train past the checkpoint, so some work is lost and must be redone
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL
    saved = Counters(**json.loads(state.read_text()))
    assert saved.step > 0 and 0 < saved.elapsed_s < 4.0

    seen: list[tuple[int, float, int]] = []
    row = pretrain_size(SIZE, cfg(time_budget_s=4.0), make_data(tmp_path), out, dropout=0.0,
                        on_step=lambda c: seen.append((c.step, c.elapsed_s, c.data_position)))
    first_step, first_elapsed, first_pos = seen[0]
    assert first_step == saved.step + 1 and first_elapsed > saved.elapsed_s
    assert first_pos == saved.data_position + 16
    assert 4.0 <= row["elapsed_s"] < 4.0 + 0.5 and row["steps"] == seen[-1][0]
    steps = [c["step"] for c in read_jsonl(out / "curves.jsonl")]
    assert steps == sorted(set(steps)), "curve points of lost work were not dropped"


@pytest.mark.parametrize("split", ["train", "val"])
def test_stage_reports_missing_data(tmp_path: Path, split: str) -> None:
    from tlc_export.data.token_files import TokenSplit
    from tlc_export.errors import StageError

    with pytest.raises(StageError, match=rf"{split}\.json: missing; run the data stage"):
        TokenSplit.open(tmp_path / "tokens", split)
