"""What pretraining takes from the data side: the validation sample across sources, per-batch
validation records, epochs seen and the warning when a budget repeats a tiny corpus."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.console import Console
from test_pretrain_loop import SIZE, cfg, make_data, make_ids, make_tokenizer
from token_format import split_docs, write_token_split

from tlc_export.atomic import read_jsonl
from tlc_export.data.mlm import IGNORE_INDEX, pack_sequences
from tlc_export.pretrain.evaluate import fixed_val_batches, validation_sample
from tlc_export.pretrain.loop import PretrainData, pretrain_size
from tlc_export.tasks.classification.stages.pretrain import load_pretrain_data

SEQ = 32


def _two_source_run(tmp: Path) -> tuple[Path, list[int]]:
    """Token files whose validation split is 95 % source 0 ('wiki') and 5 % source 1 ('books');
    returns the data folder and the validation documents' end offsets."""
    data = tmp / "data"
    make_tokenizer(data / "tokenizer")
    train = split_docs(make_ids(6_000))
    write_token_split(data / "tokens", "train", train, [0] * len(train), ["wiki", "books"], data / "tokenizer")
    big, small = split_docs(make_ids(19_000, seed=1)), split_docs(make_ids(1_000, seed=2))
    write_token_split(data / "tokens", "val", big + small, [0] * len(big) + [1] * len(small), ["wiki", "books"],
                      data / "tokenizer")
    ends = np.cumsum([len(d) for d in big + small])
    return data, ends.tolist()


def test_validation_sample_covers_every_source(tmp_path: Path) -> None:
    data_dir, ends = _two_source_run(tmp_path)
    data = load_pretrain_data(data_dir, SEQ, 0.15)
    n_rows = len(data.val_rows)
    # Reference by hand: the source of a row is the source of the document holding its first token.
    first_small_doc = len(split_docs(make_ids(19_000, seed=1)))
    starts = np.arange(n_rows) * (SEQ - 2)
    expected = (np.searchsorted(np.asarray(ends), starts, side="right") >= first_small_doc).astype(int)
    assert np.array_equal(data.val_row_sources, expected) and 0 < expected.sum() < 0.1 * n_rows

    first_rows = np.arange(16)  # what "the first rows" used to give: one source only
    assert set(expected[first_rows]) == {0}
    sample = data.validation_sample(cfg(eval_batches=1))  # 16 rows of ~633
    picked = data.val_row_sources[sample.indices]
    assert len(sample.indices) == 16 == len(set(sample.indices.tolist()))
    assert set(picked.tolist()) == {0, 1}  # the 5 % source is in it
    rec = sample.record()
    assert rec["rows_per_source"] == {"wiki": int((picked == 0).sum()), "books": int((picked == 1).sum())}
    assert rec["seed"] == 3 and rec["of_rows"] == n_rows and rec["available_per_source"]["books"] == expected.sum()
    again = data.validation_sample(cfg(eval_batches=1))
    assert np.array_equal(again.indices, sample.indices)  # fixed: every point of every size is comparable
    other = data.validation_sample(cfg(eval_batches=1, seed=4))
    assert not np.array_equal(other.indices, sample.indices)


def test_sample_is_proportional_and_takes_everything_when_small() -> None:
    sources = np.array([0] * 900 + [1] * 90 + [2] * 10)
    s = validation_sample(1000, sources, ["a", "b", "c"], 100, 20, seed=0)
    # One row each first, then the other 97 by largest remainder of 97 × (899, 89, 9) / 997.
    assert s.rows_per_source == {"a": 88, "b": 10, "c": 2}
    assert [int((sources[s.indices] == i).sum()) for i in range(3)] == [88, 10, 2]
    everything = validation_sample(50, None, [], 640, 32, seed=0)
    assert sorted(everything.indices.tolist()) == list(range(50)) and everything.rows_per_source == {"all": 50}


def test_curves_record_per_batch_validation_and_epochs(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    c = cfg(time_budget_s=1.0, eval_every_s=0.5, eval_batches=3)
    row = pretrain_size(SIZE, c, data, tmp_path / SIZE.name, dropout=0.0)
    points = read_jsonl(tmp_path / SIZE.name / "curves.jsonl")
    sample = data.validation_sample(c)
    batches = fixed_val_batches(data.val_rows, sample.indices, sample.batch_size, data.mask_spec(), c.seed)
    masked = [int((labels != IGNORE_INDEX).sum()) for _, labels in batches]
    for p in points:
        assert len(p["val_loss_sums"]) == len(p["val_token_counts"]) == 3
        assert p["val_token_counts"] == masked  # the same fixed masks at every point
        assert math.isclose(p["val_loss"], sum(p["val_loss_sums"]) / sum(p["val_token_counts"]), rel_tol=1e-12)
        assert all(isinstance(x, float) for x in p["val_loss_sums"])
    assert points[-1]["epochs"] == row["epochs"] == row["steps"] * 16 / len(data.train_rows)
    assert row["train_tokens"] == len(data.train_rows) * (SEQ - 2)
    assert row["epoch_warning"] is None  # 40k tokens, a second of training: far from 4 epochs


def test_epoch_warning_fires_on_a_tiny_corpus_with_a_long_budget(tmp_path: Path) -> None:
    full = make_data(tmp_path)
    tiny = PretrainData(pack_sequences(make_ids(600), SEQ, 0, 2), full.val_rows, full.tokenizer, 0.15)
    console = Console(record=True, width=400)
    row = pretrain_size(SIZE, cfg(time_budget_s=2.0), tiny, tmp_path / "tiny", dropout=0.0, console=console)
    assert len(tiny.train_rows) == 20 and row["epochs"] > 4  # 16 rows a step over 20 rows
    text = console.export_text()
    assert "warning" in text and "600 tokens (20 rows of 32)" in text.replace("\n", " ")
    assert row["epoch_warning"] and "600 tokens" in row["epoch_warning"] and row["projected_epochs"] > 4
    assert f"{row['projected_epochs']:.1f} epochs" in row["epoch_warning"]
