"""Claims 6 and 7 on constructed sweep points: model size vs batch size, and overfitting small data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tlc_export.report.claims.rules import FAILS, HOLDS, NOISE, NOT_MEASURED
from tlc_export.report.claims.sizes import Size
from tlc_export.report.claims.sweep import (
    PointRun,
    claim_overfit,
    claim_size_vs_batch,
    not_in_single_run,
)

SMALL, LARGE = Size("2L-64H", 100_000), Size("8L-256H", 5_000_000)
BATCHES = 8
DIFFICULTY = np.random.default_rng(0).normal(0, 0.3, BATCHES)  # shared by every model: batches differ in hardness


def _final(loss: float, seed: int, noise: float = 0.01, counts: int = 100) -> dict[str, Any]:
    per_batch = loss + DIFFICULTY + np.random.default_rng(seed).normal(0, noise, BATCHES)
    per_batch += loss - per_batch.mean()  # the point's loss is exactly `loss`
    c = np.full(BATCHES, counts, dtype=float)
    return {"val_loss": loss, "val_loss_sums": (per_batch * c).tolist(), "val_token_counts": c.tolist()}


def _point(pid: str, batch: int, fraction: float, small: float, large: float, lr: float = 1e-3,
           counts: int = 100, noise: float = 0.01) -> PointRun:
    values = {"pretrain.batch_size": batch, "data.fraction": fraction}
    seed = sum(map(ord, pid))  # deterministic (str hash() is salted per process)
    return PointRun(pid, values, batch, lr, fraction, [SMALL, LARGE],
                    {SMALL.name: _final(small, seed, noise, counts), LARGE.name: _final(large, seed + 1, noise, counts)},
                    {SMALL.name: 2.0, LARGE.name: 1.0})


def test_size_beats_batch_when_the_larger_model_at_the_small_batch_wins() -> None:
    pts = [_point("b8", 8, 1.0, small=4.0, large=3.5), _point("b16", 16, 1.0, small=3.9, large=3.4),
           _point("b32", 32, 1.0, small=3.95, large=3.6)]
    c = claim_size_vs_batch(pts)
    assert c.number == 6 and c.status == HOLDS
    # One part per starting batch; the largest starting batch with a larger one (16) decides.
    assert [p.name for p in c.parts] == ["from batch 8", "from batch 16"] and [p.status for p in c.parts] == [HOLDS] * 2
    assert abs(c.parts[0].estimate - (3.5 - 3.9)) < 1e-9 and c.parts[0].numbers["best_larger_batch"] == 16
    assert abs(c.estimate - (3.4 - 3.95)) < 1e-9 and c.interval[1] < 0
    assert c.numbers["best_larger_batch"] == 32 and c.numbers["smallest_batch"] == 16
    assert abs(c.numbers["gain_from_size"] - 0.5) < 1e-9 and abs(c.numbers["gain_from_batch"] + 0.05) < 1e-9
    assert "from batch 16 (decides)" in c.evidence


def test_below_the_critical_batch_a_larger_batch_still_pays_and_past_it_the_model_does() -> None:
    # Figure 13's shape: from batch 8 a larger batch helps the small model a lot; past 16 it barely does,
    # while the larger model at 16 is far better. The part that starts past the critical batch decides.
    pts = [_point("b8", 8, 1.0, small=5.0, large=4.9), _point("b16", 16, 1.0, small=4.0, large=3.5),
           _point("b32", 32, 1.0, small=3.98, large=3.6)]
    c = claim_size_vs_batch(pts)
    assert [p.status for p in c.parts] == [FAILS, HOLDS]
    assert c.status == HOLDS and c.numbers["smallest_batch"] == 16
    assert abs(c.estimate - (3.5 - 3.98)) < 1e-9


def test_size_does_not_beat_batch_when_the_bigger_batch_wins() -> None:
    pts = [_point("b8", 8, 1.0, small=4.0, large=3.9), _point("b16", 16, 1.0, small=3.5, large=3.4)]
    c = claim_size_vs_batch(pts)
    assert c.status == FAILS and c.interval[0] > 0


def test_size_vs_batch_needs_the_same_validation_batches_and_two_batch_sizes() -> None:
    other = [_point("b8", 8, 1.0, 4.0, 3.5), _point("b16", 16, 1.0, 3.9, 3.4, counts=90)]
    c = claim_size_vs_batch(other)
    assert c.status == NOT_MEASURED and "different validation batches" in c.reason
    one = claim_size_vs_batch([_point("b8", 8, 1.0, 4.0, 3.5), _point("b8f", 8, 0.5, 4.1, 3.7)])
    assert one.status == NOT_MEASURED and "share one pretrain.batch_size" in one.reason


def test_size_vs_batch_is_decided_on_the_full_data_group() -> None:
    # At fraction 0.1 the larger batch wins; at the full data the larger model does: the full data decides.
    pts = [_point("b8f1", 8, 1.0, 4.0, 3.5), _point("b16f1", 16, 1.0, 3.9, 3.4),
           _point("b8f01", 8, 0.1, 4.5, 4.6), _point("b16f01", 16, 0.1, 4.0, 4.1)]
    c = claim_size_vs_batch(pts)
    assert c.status == HOLDS and "b8f1" in c.compared["larger"]


def test_larger_models_overfit_small_data() -> None:
    pts = [_point("f1", 8, 1.0, small=4.0, large=3.5), _point("f01", 8, 0.01, small=4.2, large=4.6)]
    c = claim_overfit(pts)
    assert c.number == 7 and c.status == HOLDS and c.interval[0] > 0
    overfit, shrink = c.parts
    assert overfit.numbers["fraction"] == 0.01 and abs(overfit.estimate - 0.4) < 1e-9
    # With all the data the larger model is 0.5 better; at 1 % it is 0.4 worse: the advantage shrank by 0.9.
    assert shrink.numbers["diff_at_full_fraction"] < 0 and abs(shrink.estimate - 0.9) < 1e-9 and shrink.status == HOLDS
    assert c.seeds == 1 and c.status_text == "holds (one seed: indicative)"


def test_overfit_is_against_the_best_smaller_size() -> None:
    mid = Size("4L-128H", 1_000_000)
    pts = [_point("f1", 8, 1.0, small=4.0, large=3.5), _point("f01", 8, 0.01, small=4.6, large=4.4)]
    for p, loss in zip(pts, (3.7, 4.2), strict=True):  # the middle size beats the largest at 1 % data
        p.sizes = [SMALL, mid, LARGE]
        p.finals[mid.name] = _final(loss, 99)
    c = claim_overfit(pts)
    assert c.status == HOLDS and c.compared["smaller"] == mid.name and abs(c.estimate - 0.2) < 1e-9
    # Against the smallest alone the largest is *better* (4.4 < 4.6): a largest-vs-smallest test says the opposite.
    assert "(against each smaller size" in c.evidence


def test_overfit_parts_per_batch_group_and_noise() -> None:
    pts = [_point("b8f1", 8, 1.0, 4.0, 3.5), _point("b8f05", 8, 0.5, 4.2, 4.2005, noise=0.2),
           _point("b16f1", 16, 1.0, 4.0, 3.5), _point("b16f05", 16, 0.5, 4.2, 4.6)]
    c = claim_overfit(pts)
    assert len(c.parts) == 4 and [p.status for p in c.parts] == [NOISE, HOLDS, HOLDS, HOLDS]
    assert c.parts[0].name.endswith("(decides)") and c.status == NOISE  # the first group with the most fractions decides
    none = claim_overfit([_point("a", 8, 1.0, 4.0, 3.5), _point("b", 16, 1.0, 3.9, 3.4)])
    assert none.status == NOT_MEASURED and "data.fraction" in none.reason


def test_a_single_run_says_how_to_measure_them() -> None:
    six, seven = not_in_single_run()
    assert (six.number, seven.number) == (6, 7) and six.status == seven.status == NOT_MEASURED
    assert "ablation-batch.yaml" in six.reason and "ablation-data.yaml" in seven.reason


def test_sweep_claims_take_their_interval_over_pretraining_seeds() -> None:
    # Each point pretrained with two seeds: claim 7's difference is decided over the seeds (t, 1 df).
    pts = [_point("f1", 8, 1.0, small=4.0, large=3.5), _point("f01", 8, 0.01, small=4.2, large=4.6)]
    second = {"f1": (4.02, 3.52), "f01": (4.21, 4.65)}
    for p in pts:
        s, l_ = second[p.id]
        p.replicas = [{SMALL.name: _final(s, 7), LARGE.name: _final(l_, 8)}]
    c = claim_overfit(pts)
    per_seed = [4.6 - 4.2, 4.65 - 4.21]
    assert c.seeds == 2 and c.parts[0].numbers["per_seed_diff"] == pytest.approx(per_seed, abs=1e-9)
    half = 12.706 * abs(per_seed[0] - per_seed[1]) / 2  # t(0.975, 1) from the table
    assert c.interval == pytest.approx((np.mean(per_seed) - half, np.mean(per_seed) + half), abs=1e-3)
    assert "2 pretraining seeds" in c.interval_method and c.status == HOLDS and "indicative" not in c.status_text
    six = claim_size_vs_batch([_point("b8", 8, 1.0, 4.0, 3.5), _point("b16", 16, 1.0, 3.9, 3.4)])
    assert six.seeds == 1 and six.status_text == "holds (one seed: indicative)"
