"""Training pairs on disk: encoded once into memory-mapped token files (ids equal the tokenizer's),
resumable, batched and trained on exactly as the in-memory lists; HF datasets streamed."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from tlc_export.data.shards import PROGRESS_FILE
from tlc_export.errors import DataSourceError
from tlc_export.recipe import parse_recipe
from tlc_export.tasks.translation import pair_files as PF
from tlc_export.tasks.translation.batching import encode_pairs, token_batches
from tlc_export.tasks.translation.data import PairStream, ParallelPair, hf_splits
from tlc_export.tasks.translation.tokenizer import train_tokenizers

RECIPE = """\
translation:
  data: {kind: %s}
  tokenizer: {vocab_size: 300, min_frequency: 1, shared: %s}
  sizes: [{layers: 1, hidden: 32, heads: 2, ffn: 64}]
  max_source_length: 12
  max_target_length: 10
  dropout: 0.0
  train: {time_budget_s: 1, batch_tokens: 160, max_tokens_per_micro_batch: 64, lr: 0.003, seed: 3}
  decoding: {strategy: greedy, max_length: 12}
"""
WORDS = ["cat", "dog", "bird", "man", "woman", "child"]
PAIRS = [ParallelPair(f"the {a} sees the {b}" + " again" * (i % 5), f"le {a} voit le {b}" + " encore" * (i % 7), f"{i}")
         for i, (a, b) in enumerate((a, b) for a in WORDS for b in WORDS)]


def _cfg(kind: str = "tsv, path: unused.tsv", shared: bool = True):
    return parse_recipe(RECIPE % (kind, "true" if shared else "false")).translation


def _write(tmp: Path, tok, cfg, pairs=PAIRS, **kw):
    tok_dir = tmp / "tokenizer"
    if not tok_dir.exists():
        tok.save(tok_dir)
    return PF.write_pair_files(pairs, out_dir=tmp, tokenizers=tok, tokenizer_sha=PF.tokenizers_sha256(tok_dir),
                               max_source_length=cfg.max_source_length, max_target_length=cfg.max_target_length,
                               plan={"test": 1}, **kw)


@pytest.mark.parametrize("shared", [True, False])
def test_ids_on_disk_equal_the_tokenizers(tmp_path, shared):
    cfg = _cfg(shared=shared)
    tok = train_tokenizers(PAIRS, cfg.tokenizer)
    res = _write(tmp_path, tok, cfg, shard_pairs=7)
    files = PF.PairFiles.open(tmp_path / PF.PAIRS_DIR, tokenizer_sha=PF.tokenizers_sha256(tmp_path / "tokenizer"))
    # Reference: the tokenizer itself (truncation to the max lengths, </s> kept last).
    src = tok.source([p.source for p in PAIRS], truncation=True, max_length=cfg.max_source_length)["input_ids"]
    tgt = tok.target([p.target for p in PAIRS], truncation=True, max_length=cfg.max_target_length)["input_ids"]
    assert len(files) == len(PAIRS) == res.header["pairs"]
    assert max(len(t) for t in tgt) == cfg.max_target_length  # some targets were truncated
    for i in range(len(PAIRS)):
        assert files.source[i].tolist() == src[i] and files.target[i].tolist() == tgt[i]
        assert files.source[i][-1] == files.target[i][-1] == 1  # </s>
    assert files.source.ids.dtype == np.uint16 and isinstance(files.source.ids.base, np.memmap)  # mapped, not read
    folder = tmp_path / PF.PAIRS_DIR
    for key, name in res.header["files"].items():  # the manifest's checksums are the files'
        assert res.header["sha256"][key] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert not (tmp_path / PF.PARTIAL_DIR).exists()


def test_truncated_file_is_refused_with_the_fix(tmp_path):
    cfg = _cfg()
    tok = train_tokenizers(PAIRS, cfg.tokenizer)
    _write(tmp_path, tok, cfg)
    path = tmp_path / PF.PAIRS_DIR / "train.tgt.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(Exception, match=r"train\.tgt\.bin.*incomplete.*re-run the translation stage"):
        PF.PairFiles.open(tmp_path / PF.PAIRS_DIR)


class Interrupted(Exception):
    pass


def test_interrupted_encoding_resumes_to_the_same_bytes(tmp_path):
    cfg = _cfg()
    tok = train_tokenizers(PAIRS, cfg.tokenizer)
    whole = _write(tmp_path / "whole", tok, cfg, shard_pairs=5)

    def stop(written: int) -> None:
        if written >= 15:
            raise Interrupted

    with pytest.raises(Interrupted):
        _write(tmp_path / "cut", tok, cfg, shard_pairs=5, on_commit=stop)
    assert (tmp_path / "cut" / PF.PARTIAL_DIR / PROGRESS_FILE).is_file()
    assert not (tmp_path / "cut" / PF.PAIRS_DIR).exists()  # nothing half-done is published
    # A torn write after the last recorded shard (the kill came mid-shard) is cut on resume.
    with open(tmp_path / "cut" / PF.PARTIAL_DIR / "train.src.bin", "ab") as f:
        f.write(b"\x07\x00" * 9)
    encoded: list[int] = []
    again = _write(tmp_path / "cut", tok, cfg, shard_pairs=5, on_commit=encoded.append)
    assert again.resumed_pairs == 15 and encoded[0] == 20  # the first 15 pairs were not encoded again
    assert again.header["sha256"] == whole.header["sha256"] and again.header["text_sha256"] == whole.header["text_sha256"]
    for name in whole.header["files"].values():
        assert (tmp_path / "cut" / PF.PAIRS_DIR / name).read_bytes() == (tmp_path / "whole" / PF.PAIRS_DIR / name).read_bytes()


def test_memmap_batches_and_step_equal_the_lists(tmp_path):
    from tlc_export.tasks.translation import train as T
    from tlc_export.tasks.translation.model import build_translation_model

    cfg = _cfg()
    tok = train_tokenizers(PAIRS, cfg.tokenizer)
    _write(tmp_path, tok, cfg, shard_pairs=8)
    files = PF.PairFiles.open(tmp_path / PF.PAIRS_DIR)
    lists = encode_pairs(tok, PAIRS, cfg.max_source_length, cfg.max_target_length)
    assert token_batches(files, 64, seed=4) == token_batches(lists, 64, seed=4)
    plan_f, plan_l = T.StepPlan(files, 64, 160, seed=3), T.StepPlan(lists, 64, 160, seed=3)
    micro, pos = plan_l.next_step(0)
    assert plan_f.next_step(0) == (micro, pos) and len(micro) >= 2

    out = {}
    for name, enc in (("lists", lists), ("files", files)):
        model = build_translation_model(cfg.grid()[0], cfg, source_vocab=len(tok.source), seed=3)
        opt = T.make_optimizer(model, cfg.train, torch.device("cpu"))
        loss, tokens = T.train_step(model, opt, enc, micro, 0.003, cfg, torch.device("cpu"), None)
        out[name] = (loss, tokens, {k: v.clone() for k, v in model.state_dict().items()})
    assert out["files"][0] == pytest.approx(out["lists"][0], rel=1e-6) and out["files"][1] == out["lists"][1]
    moved = 0
    for k, v in out["lists"][2].items():
        assert torch.allclose(out["files"][2][k], v, atol=1e-7), k
    ref = build_translation_model(cfg.grid()[0], cfg, source_vocab=len(tok.source), seed=3).state_dict()
    moved = sum(not torch.equal(ref[k], v) for k, v in out["lists"][2].items())
    assert moved > 5  # the step changed the weights (the comparison is not of two untouched models)


def test_open_or_write_reuses_matching_files_and_reencodes_changed_data(tmp_path):
    cfg = _cfg()
    tok = train_tokenizers(PAIRS, cfg.tokenizer)
    tok.save(tmp_path / "tokenizer")
    kw = {"out_dir": tmp_path, "tokenizers": tok, "tokenizer_dir": tmp_path / "tokenizer",
          "max_source_length": cfg.max_source_length, "max_target_length": cfg.max_target_length}
    first = PF.open_or_write(PAIRS, plan={"v": 1}, **kw)
    assert PF.open_or_write(iter(()), plan={"v": 1}, **kw).header == first.header  # reused: the data is not read
    second = PF.open_or_write(PAIRS[:10], plan={"v": 2}, **kw)
    assert len(second) == 10


# --- HF datasets, streamed ------------------------------------------------------------------------


def _fake_datasets(monkeypatch, load_dataset) -> list[dict]:
    calls: list[dict] = []

    def load(name, config=None, split=None, **kw):
        calls.append({"name": name, "config": config, "split": split, **kw})
        return load_dataset(name, config, split)

    mod = types.SimpleNamespace(load_dataset=load, load_from_disk=None, DatasetDict=dict)
    monkeypatch.setitem(sys.modules, "datasets", mod)
    return calls


def test_hf_offline_error_names_the_field_and_the_fix(tmp_path, monkeypatch):
    def offline(*a):
        raise ConnectionError("Couldn't reach 'wmt14' on the Hub (LocalEntryNotFoundError)")

    _fake_datasets(monkeypatch, offline)
    cfg = _cfg("hf, name: wmt14, config: fr-en")
    with pytest.raises(DataSourceError) as err:
        hf_splits(cfg, tmp_path)
    msg = str(err.value)
    assert "translation.data.name" in msg and "wmt14" in msg and "ConnectionError" in msg
    assert "kind: tsv" in msg and "huggingface.co" in msg


def test_hf_without_datasets_installed_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(DataSourceError, match=r"`datasets` package is not installed.*translation.data.kind: tsv"):
        hf_splits(_cfg("hf, name: wmt14, config: fr-en"), tmp_path)


def test_hf_train_split_is_streamed_and_encoded_from_the_stream(tmp_path, monkeypatch):
    rows = {"train": [{"translation": {"en": p.source, "fr": p.target}} for p in PAIRS]
            + [{"translation": {"en": "", "fr": "vide"}}],
            "validation": [{"translation": {"en": "the cat", "fr": "le chat"}}] * 3,
            "test": [{"translation": {"en": "the dog", "fr": "le chien"}}] * 2}
    opened: list[str] = []

    def load(name, config, split):
        opened.append(split)
        return (r for r in rows[split])  # an iterable read once, as a hub stream

    calls = _fake_datasets(monkeypatch, load)
    cfg = _cfg("hf, name: wmt14, config: fr-en")
    data = hf_splits(cfg, tmp_path)
    assert all(c["streaming"] is True and c["name"] == "wmt14" and c["config"] == "fr-en" for c in calls)
    assert isinstance(data.train, PairStream) and data.counts() == {"train": None, "dev": 3, "test": 2}
    assert "train" not in opened  # nothing of the training split is read until it is used
    tok = train_tokenizers(data.train, cfg.tokenizer)
    tok.save(tmp_path / "tokenizer")
    files = PF.open_or_write(data.train, out_dir=tmp_path, tokenizers=tok, tokenizer_dir=tmp_path / "tokenizer",
                             max_source_length=cfg.max_source_length, max_target_length=cfg.max_target_length,
                             plan={"hf": 1})
    assert len(files) == len(PAIRS) and data.train.skipped == 1  # the empty row is counted, not trained on
    ref = encode_pairs(tok, PAIRS, cfg.max_source_length, cfg.max_target_length)
    assert [files.target[i].tolist() for i in range(len(PAIRS))] == ref.target
    capped = PairStream(cfg, "train", tmp_path, limit=5)
    assert len(list(capped)) == 5 and json.dumps(data.info)  # the split report is JSON


def test_bpe_sample_of_a_stream_spreads_over_the_declared_split(tmp_path, monkeypatch):
    rows = [{"translation": {"en": f"s{i}", "fr": f"t{i}"}} for i in range(100)]

    class Stream(list):
        info = types.SimpleNamespace(splits={"train": types.SimpleNamespace(num_examples=100)})

    _fake_datasets(monkeypatch, lambda name, config, split: Stream(rows))
    cfg = _cfg("hf, name: wmt14, config: fr-en")
    got = [p.source for p in PairStream(cfg, "train", tmp_path).sample(10)]
    assert got == [f"s{i}" for i in range(0, 100, 10)]  # every 10th row, not the first 10
    Stream.info = types.SimpleNamespace(splits={})  # size not declared: the first pairs
    assert [p.source for p in PairStream(cfg, "train", tmp_path).sample(3)] == ["s0", "s1", "s2"]
