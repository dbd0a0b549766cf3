"""`data.fraction`: a deterministic, nested, document-level subsample of the training documents; the
validation split, the tokenizer and the data stage are the same for every fraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_pretrain_loop import make_ids, make_tokenizer
from token_format import split_docs, write_token_split

from tlc_export.data.split import fraction_hash
from tlc_export.data.subsample import DocumentSubset, kept_documents
from tlc_export.data.token_files import TOKENS_DIR, TokenSplit
from tlc_export.errors import StageError
from tlc_export.recipe import parse_recipe
from tlc_export.tasks.classification.stages.data import DataStage
from tlc_export.tasks.classification.stages.pretrain import PretrainStage, load_pretrain_data

SEQ = 32


def _hashes(n: int, seed: int = 0) -> list[int]:
    """Documents' subsample hashes as the token files store them: any uniform uint64 will do for the subsample
    logic, so these are drawn at random (not computed by the code under test); `fraction_hash` itself is
    pinned below."""
    return [int(h) for h in np.random.default_rng(seed).integers(0, 2**64, size=n, dtype=np.uint64)]


def _run(tmp: Path, v1: bool = False) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    data = tmp / "data"
    make_tokenizer(data / "tokenizer")
    train, val = split_docs(make_ids(30_000)), split_docs(make_ids(3_000, seed=1))
    write_token_split(data / TOKENS_DIR, "train", train, [0] * len(train), ["src"], data / "tokenizer",
                      hashes=None if v1 else _hashes(len(train)))
    write_token_split(data / TOKENS_DIR, "val", val, [0] * len(val), ["src"], data / "tokenizer",
                      hashes=None if v1 else _hashes(len(val), seed=1))
    return data, train, val


def test_fraction_hash_format_pin() -> None:
    """A format pin, not a reference: stored token files and cache keys depend on these exact values, so a
    change to the hash (its domain string, separator, digest size or byte order) must be deliberate."""
    assert [fraction_hash(0, "src", str(i)) for i in range(3)] == [
        3688083987912547793, 13169779780287902825, 1707709498712446924]
    assert fraction_hash(7, "brown", "ca01") == 4248376056499116411


def test_subsample_is_deterministic_nested_and_the_right_size(tmp_path: Path) -> None:
    data, train, _ = _run(tmp_path)
    split = TokenSplit.open(data / TOKENS_DIR, "train")
    keep = {f: kept_documents(split, f) for f in (1.0, 0.5, 0.05, 0.01)}
    assert keep[1.0].all()
    assert np.array_equal(keep[0.05], kept_documents(TokenSplit.open(data / TOKENS_DIR, "train"), 0.05))
    for small, large in ((0.01, 0.05), (0.05, 0.5), (0.5, 1.0)):
        assert not (keep[small] & ~keep[large]).any()  # the 1 % sample is inside the 5 % one, and so on
    n = len(train)
    # Reference: the threshold applied by hand to the documented hashes.
    expected = np.array([h < int(0.5 * 2**64) for h in _hashes(n)])
    assert np.array_equal(keep[0.5], expected)
    assert abs(keep[0.5].mean() - 0.5) < 4 * np.sqrt(0.25 / n)  # binomial: within 4 standard deviations
    assert 0 < keep[0.05].sum() < keep[0.5].sum()


def test_document_subset_is_the_kept_documents_concatenated(tmp_path: Path) -> None:
    data, train, _ = _run(tmp_path)
    split = TokenSplit.open(data / TOKENS_DIR, "train")
    keep = kept_documents(split, 0.3)
    sub = DocumentSubset(split.ids, split.document_ends, keep)
    reference = np.concatenate([d for d, k in zip(train, keep, strict=True) if k])
    assert len(sub) == len(reference) and sub.documents == int(keep.sum())
    assert np.array_equal(sub[np.arange(len(reference))], reference)
    idx = np.random.default_rng(0).integers(0, len(reference), size=(7, 5))
    assert np.array_equal(sub[idx], reference[idx])
    assert np.array_equal(sub[10:50], reference[10:50])
    with pytest.raises(IndexError):
        sub[np.array([len(reference)])]


def test_pretraining_rows_subsample_train_and_keep_validation(tmp_path: Path) -> None:
    data, train, _ = _run(tmp_path)
    full = load_pretrain_data(data, SEQ, 0.15)
    part = load_pretrain_data(data, SEQ, 0.15, fraction=0.3)
    assert np.array_equal(part.val_rows[np.arange(len(part.val_rows))], full.val_rows[np.arange(len(full.val_rows))])
    keep = kept_documents(TokenSplit.open(data / TOKENS_DIR, "train"), 0.3)
    kept_tokens = np.concatenate([d for d, k in zip(train, keep, strict=True) if k])
    assert len(part.train_rows) == len(kept_tokens) // (SEQ - 2) < len(full.train_rows)
    assert np.array_equal(part.train_rows[0][1:-1], kept_tokens[: SEQ - 2])
    assert part.train_documents == {"kept": int(keep.sum()), "of": len(train)} and part.data_fraction == 0.3
    with pytest.raises(StageError, match=r"data\.fraction=1e-06 keeps 0 of"):
        load_pretrain_data(data, SEQ, 0.15, fraction=1e-6)


def test_version_1_token_files_cannot_be_subsampled(tmp_path: Path) -> None:
    data, _, _ = _run(tmp_path, v1=True)
    assert len(load_pretrain_data(data, SEQ, 0.15).train_rows) > 0  # still readable whole
    with pytest.raises(StageError, match="re-run the data stage"):
        load_pretrain_data(data, SEQ, 0.15, fraction=0.5)


def test_the_fraction_is_in_the_pretrain_key_not_the_data_key() -> None:
    base = "models: {sizes: [{layers: 1, hidden: 32}]}\npretrain: {time_budget_s: 1}\ndata: {fraction: %s}\n"
    a, b = parse_recipe(base % "1.0"), parse_recipe(base % "0.05")
    assert DataStage().cache_key(a, {}) == DataStage().cache_key(b, {})
    assert PretrainStage().cache_key(a, {"data": "k"}) != PretrainStage().cache_key(b, {"data": "k"})
    with pytest.raises(Exception, match="fraction"):
        parse_recipe(base % "0")
