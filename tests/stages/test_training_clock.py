"""The training clock's boundaries, on a fake clock: from the end of one step to the end of the next.

Waiting on the data (the feed, the step plan) and the bookkeeping between steps count; evaluation,
checkpoints and the warm-up before the first step do not. Each piece of work moves the fake clock by
its own amount, so a lap's length says exactly which pieces were on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_pretrain_loop import SIZE, cfg, make_data
from test_translation_train import StepClock, _setup, timed_step

from tlc_export.atomic import read_jsonl
from tlc_export.train.clock import TrainingClock

STEP, FEED, BOOKKEEPING, EVAL, SAVE, WARMUP = 0.05, 0.02, 0.01, 1.0, 2.0, 4.0


def test_lap_spans_step_end_to_step_end_less_pauses() -> None:
    fake = StepClock(0.0)
    c = TrainingClock(fake)
    fake.advance(3.0)  # before start: set-up, not training
    c.start()
    fake.advance(0.5)
    assert c.lap() == pytest.approx(0.5)
    fake.advance(0.1)
    with c.paused():
        fake.advance(7.0)
    fake.advance(0.2)
    assert c.lap() == pytest.approx(0.3)  # the pause is off, the time either side of it is on
    assert c.lap() == 0.0
    with pytest.raises(RuntimeError):
        TrainingClock(fake).lap()


def test_pretraining_counts_the_feed_and_bookkeeping_not_evaluation_or_checkpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlc_export.pretrain.loop as loop

    fake = StepClock(STEP)
    calls = {"eval": 0, "save": 0}

    class TimedStep(loop.TrainStep):
        def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
            fake.advance()
            return super().__call__(*args, **kwargs)

    class SlowFeed(loop.BatchFeed):
        def next(self):  # noqa: ANN202 - a data stall before every step
            fake.advance(FEED)
            return super().next()

    real_eval, real_save = loop.evaluate, loop.save_state

    def slow_eval(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        calls["eval"] += 1
        fake.advance(EVAL)
        return real_eval(*a, **kw)

    def slow_save(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        calls["save"] += 1
        fake.advance(SAVE)
        return real_save(*a, **kw)

    for name, value in [("clock", fake), ("TrainStep", TimedStep), ("BatchFeed", SlowFeed), ("evaluate", slow_eval),
                        ("save_state", slow_save)]:
        monkeypatch.setattr(loop, name, value)
    seen: list[float] = []

    def bookkeeping(c) -> None:  # noqa: ANN001 - after the step's end: counted on the next lap
        seen.append(c.elapsed_s)
        fake.advance(BOOKKEEPING)

    row = loop.pretrain_size(SIZE, cfg(time_budget_s=1.0, eval_every_s=0.3, checkpoint_every_s=0.25), make_data(tmp_path),
                             tmp_path / SIZE.name, dropout=0.0, on_step=bookkeeping)
    assert calls["eval"] >= 3 and calls["save"] >= 3  # pauses happened, many seconds of them
    laps = [b - a for a, b in zip([0.0, *seen[:-1]], seen, strict=True)]
    assert laps[0] == pytest.approx(FEED + STEP)
    assert all(lap == pytest.approx(BOOKKEEPING + FEED + STEP) for lap in laps[1:]), laps
    assert row["elapsed_s"] == pytest.approx(seen[-1], abs=1e-3) and 1.0 <= row["elapsed_s"] < 1.0 + 0.08
    points = read_jsonl(tmp_path / SIZE.name / "curves.jsonl")
    assert all(p["elapsed_s"] < 1.1 for p in points)  # no evaluation or checkpoint second on the curve's axis


def test_translation_warmup_is_off_the_clock_and_the_plan_is_on_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread) -> None:  # noqa: ANN001
    import tlc_export.tasks.translation.train as T

    fake = StepClock(STEP)
    warmups: list[int] = []
    real_warmup, real_dev_loss, real_save = T._warmup, T.dev_loss, T.save_state

    def slow_warmup(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        warmups.append(1)
        fake.advance(WARMUP)
        return real_warmup(*a, **kw)

    def slow_dev_loss(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        fake.advance(EVAL)
        return real_dev_loss(*a, **kw)

    def slow_save(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        fake.advance(SAVE)
        return real_save(*a, **kw)

    class SlowPlan(T.StepPlan):
        def next_step(self, position: int):  # noqa: ANN202
            fake.advance(FEED)
            return super().next_step(position)

    for name, value in [("clock", fake), ("train_step", timed_step(fake, T.train_step)), ("_warmup", slow_warmup),
                        ("dev_loss", slow_dev_loss), ("save_state", slow_save), ("StepPlan", SlowPlan)]:
        monkeypatch.setattr(T, name, value)
    seen: list[float] = []
    cfg, tok, train, dev = _setup()
    row = T.train_translation_size(cfg.grid()[0], cfg, tok, train, dev, tmp_path / "run",
                                   on_step=lambda c: seen.append(c.elapsed_s))
    assert warmups == [1]
    laps = [b - a for a, b in zip([0.0, *seen[:-1]], seen, strict=True)]
    # The warm-up's own plan lookup and 4 s happened before the clock started.
    assert all(lap == pytest.approx(FEED + STEP) for lap in laps), laps
    assert row["steps"] == 15 and row["elapsed_s"] == pytest.approx(15 * (FEED + STEP))


def test_translation_step_host_syncs_do_not_grow_with_micro_batches(monkeypatch: pytest.MonkeyPatch,
                                                                    one_thread) -> None:  # noqa: ANN001
    import torch

    import tlc_export.tasks.translation.train as T

    cfg, tok, train, _ = _setup()
    model = T.build_translation_model(cfg.grid()[0], cfg, source_vocab=len(tok.source), seed=1)
    opt = T.make_optimizer(model, cfg.train, torch.device("cpu"))
    syncs: list[str] = []
    for name in ("__float__", "item"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _r=real, _n=name, **kw: (syncs.append(_n), _r(self, *a, **kw))[1])
    counts = []
    for step_tokens in (1, 400):  # one micro-batch, then several
        micro, _ = T.StepPlan(train, 48, step_tokens, seed=5).next_step(0)
        syncs.clear()
        loss, _ = T.train_step(model, opt, train, micro, 1e-3, cfg, torch.device("cpu"), None)
        # __bool__ is left out: the Marian forward's own mask checks, not the training loop's.
        counts.append((len(micro), sum(n in ("__float__", "item") for n in syncs), loss))
    (one, n_one, _), (many, n_many, loss) = counts
    assert one == 1 and many >= 3 and loss > 0
    assert n_many == n_one, counts  # no host sync per micro-batch (the optimizer's step counters aside)
