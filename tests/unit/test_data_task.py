"""Task loading from local files: label encoding, a stable disjoint split, caps and clear errors."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from tlc_export.config.finetune import TaskConfig
from tlc_export.data.task import load_task, split_examples
from tlc_export.errors import DataSourceError
from tlc_export.recipe import parse_recipe

BASE = "models: {sizes: [{layers: 1, hidden: 32}]}\npretrain: {time_budget_s: 1}\n"


def _recipe(tmp_path: Path):
    return parse_recipe(BASE, base_dir=tmp_path)


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"sentence": f"review {i} {rng.random():.6f}", "sentiment": rng.choice(["pos", "neg", "neutral"])}
            for i in range(n)]


def test_csv_task_split_is_stable_disjoint_and_order_independent(tmp_path):
    rows = _rows(2000)
    _write_csv(tmp_path / "t.csv", rows, ["sentence", "sentiment"])
    cfg = TaskConfig(kind="csv", path="t.csv", text_column="sentence", label_column="sentiment",
                     dev_fraction=0.1, test_fraction=0.2)
    task = load_task(cfg, _recipe(tmp_path))
    assert task.label_names == ["neg", "neutral", "pos"] and task.num_labels == 3
    texts = {s: {e.text for e in getattr(task, s)} for s in ("train", "dev", "test")}
    assert not (texts["train"] & texts["dev"]) and not (texts["train"] & texts["test"]) and not (texts["dev"] & texts["test"])
    assert sum(len(v) for v in texts.values()) == 2000
    assert abs(len(texts["dev"]) / 2000 - 0.1) < 0.03 and abs(len(texts["test"]) / 2000 - 0.2) < 0.03
    by_text = {r["sentence"]: r["sentiment"] for r in rows}
    assert all(task.label_names[e.label] == by_text[e.text] for e in task.train + task.dev + task.test)

    random.Random(1).shuffle(rows)  # same examples in another order → same assignment
    _write_csv(tmp_path / "t.csv", rows, ["sentence", "sentiment"])
    again = load_task(cfg, _recipe(tmp_path))
    assert {e.text for e in again.test} == texts["test"] and {e.text for e in again.dev} == texts["dev"]


def test_max_train_examples_is_a_deterministic_subset(tmp_path):
    _write_csv(tmp_path / "t.csv", _rows(600), ["sentence", "sentiment"])
    full = TaskConfig(kind="csv", path="t.csv", text_column="sentence", label_column="sentiment")
    capped = full.model_copy(update={"max_train_examples": 100})
    a, b = load_task(capped, _recipe(tmp_path)), load_task(capped, _recipe(tmp_path))
    everything = load_task(full, _recipe(tmp_path))
    assert len(a.train) == 100 and a.train == b.train
    assert {e.text for e in a.train} <= {e.text for e in everything.train}
    assert a.dev == everything.dev and a.test == everything.test


def test_max_eval_examples_caps_dev_and_test_to_a_fixed_subset(tmp_path):
    _write_csv(tmp_path / "t.csv", _rows(600), ["sentence", "sentiment"])
    full = TaskConfig(kind="csv", path="t.csv", text_column="sentence", label_column="sentiment")
    capped = full.model_copy(update={"max_eval_examples": 20})
    a, b = load_task(capped, _recipe(tmp_path)), load_task(capped, _recipe(tmp_path))
    everything = load_task(full, _recipe(tmp_path))
    assert len(everything.dev) > 20 and len(everything.test) > 20
    assert len(a.dev) == len(a.test) == 20 and a.dev == b.dev and a.test == b.test
    assert set(a.dev) <= set(everything.dev) and set(a.test) <= set(everything.test)
    assert a.train == everything.train


def test_jsonl_pairs_and_integer_labels(tmp_path):
    with open(tmp_path / "nli.jsonl", "w") as f:
        for i in range(300):
            f.write(json.dumps({"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3}) + "\n")
        f.write(json.dumps({"premise": "hidden", "hypothesis": "x", "label": -1}) + "\n")
    cfg = TaskConfig(kind="jsonl", path="nli.jsonl", text_column="premise", text_pair_column="hypothesis")
    task = load_task(cfg, _recipe(tmp_path))
    allx = task.train + task.dev + task.test
    assert len(allx) == 300 and task.num_labels == 3  # the unlabelled (-1) row is dropped
    assert all(e.text_pair == "h" + e.text[1:] and e.label == int(e.text[1:]) % 3 for e in allx)


def test_missing_column_names_file_and_column(tmp_path):
    _write_csv(tmp_path / "bad.csv", _rows(10), ["sentence", "sentiment"])
    cfg = TaskConfig(kind="csv", path="bad.csv", text_column="text", label_column="sentiment")
    with pytest.raises(DataSourceError) as err:
        load_task(cfg, _recipe(tmp_path))
    msg = str(err.value)
    assert "bad.csv" in msg and "'text'" in msg and "text_column" in msg and "sentence" in msg


def test_missing_file_is_a_clear_error(tmp_path):
    cfg = TaskConfig(kind="csv", path="nope.csv")
    with pytest.raises(DataSourceError, match="nope.csv"):
        load_task(cfg, _recipe(tmp_path))


def test_duplicates_never_straddle_splits():
    from tlc_export.data.task import Example

    examples = [Example(f"t{i % 50}", i % 2) for i in range(1000)]
    train, dev, test = split_examples(examples, 0.2, 0.2)
    sets = [{e.text for e in s} for s in (train, dev, test)]
    assert sum(len(s) for s in sets) == 50
