"""The validation split: a per-document hash, deterministic, order-free, with the minimum honoured."""

from __future__ import annotations

import random

import numpy as np

from tlc_export.data.split import SplitRouter, val_score


def _route(keys: list[str], fraction: float, min_val: int, seed: int = 0) -> dict[str, list[str]]:
    router: SplitRouter[str] = SplitRouter(fraction, min_val)
    out: dict[str, list[str]] = {"train": [], "val": []}
    for k in keys:
        for split, doc in router.route(k, val_score(seed, "src", k)):
            out[split].append(doc)
    for split, doc in router.finish():
        out[split].append(doc)
    return out


def test_score_is_a_stable_uniform_hash() -> None:
    scores = np.array([val_score(0, "src", str(i)) for i in range(20_000)])
    assert val_score(0, "src", "7") == scores[7]  # no per-process salt
    assert 0.0 <= scores.min() and scores.max() < 1.0
    assert abs(scores.mean() - 0.5) < 0.01 and abs((scores < 0.1).mean() - 0.1) < 0.01
    assert val_score(1, "src", "7") != scores[7] and val_score(0, "other", "7") != scores[7]


def test_hash_split_is_deterministic_order_free_and_exact() -> None:
    keys = [f"doc{i}" for i in range(5_000)]
    split = _route(keys, 0.05, 10)
    assert sorted(split["train"] + split["val"]) == sorted(keys)  # every document exactly once
    # Reference by hand: the val set is exactly the documents scoring below the fraction.
    expected = {k for k in keys if val_score(0, "src", k) < 0.05}
    assert len(expected) > 10 and set(split["val"]) == expected
    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    assert set(_route(shuffled, 0.05, 10)["val"]) == expected  # no dependence on order or neighbours
    assert set(_route(keys[:2_500], 0.05, 10)["val"]) == {k for k in expected if k in set(keys[:2_500])}
    assert set(_route(keys, 0.05, 10, seed=1)["val"]) != expected


def test_min_val_documents_tops_up_with_the_lowest_scores_but_never_past_half() -> None:
    keys = [f"d{i}" for i in range(40)]
    split = _route(keys, 0.001, 6)  # the hash alone holds out (almost surely) nothing
    lowest = sorted(keys, key=lambda k: val_score(0, "src", k))[:6]
    assert sorted(split["val"]) == sorted(lowest)
    assert sorted(split["train"]) == sorted(set(keys) - set(lowest))
    tiny = _route(keys[:6], 0.001, 10)
    assert len(tiny["val"]) == 3 and len(tiny["train"]) == 3  # at most half of a tiny corpus
