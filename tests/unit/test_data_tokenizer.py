"""Byte-level BPE: lossless round trip, RoBERTa special ids, HF loading, and the $TLC_HOME cache."""

from __future__ import annotations

import json
import random

import pytest

from tlc_export.config.data import TokenizerConfig
from tlc_export.data.tokenizer import load_tokenizer, train_tokenizer

WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "dogs", "barked", "loudly", "at", "strangers",
         "reading", "books", "quietly", "in", "library", "Paris", "London", "1913", "can't", "it's"]


@pytest.fixture(scope="module")
def docs() -> list[str]:
    rng = random.Random(0)
    out = []
    for _ in range(300):
        sent = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15)))
        out.append(sent.capitalize() + rng.choice([".", "!", "?", ", said he."]))
    return out


@pytest.fixture(scope="module")
def tok_dir(docs, tmp_path_factory):
    home = tmp_path_factory.mktemp("tlc_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("TLC_HOME", str(home))
    out = tmp_path_factory.mktemp("run") / "tokenizer"
    info = train_tokenizer(docs, TokenizerConfig(vocab_size=400, min_frequency=2), out, model_max_length=64)
    again = train_tokenizer(docs, TokenizerConfig(vocab_size=400, min_frequency=2), out, model_max_length=64)
    mp.undo()
    return out, info, again


def test_round_trip_is_lossless(tok_dir):
    tok = load_tokenizer(tok_dir[0])
    for text in ["The cat sat on a mat.", "  leading and   multiple spaces ,  before punctuation .",
                 "Ünïcödé, 日本語 and emoji 😀 never seen in training", "tabs\tand\nnewlines\n\n",
                 "<s> looks special but is plain text"[5:]]:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert tok.unk_token_id not in ids  # byte-level: every byte is in the alphabet


def test_roberta_special_tokens_and_pairs(tok_dir):
    tok = load_tokenizer(tok_dir[0])
    assert [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id] == [0, 1, 2, 3, 4]
    assert tok.model_max_length == 64 and 256 + 5 < len(tok) <= 400  # the tiny corpus runs out of merges
    one = tok("cat")["input_ids"]
    assert one[0] == 0 and one[-1] == 2
    pair = tok("cat", "dog")["input_ids"]
    assert pair[0] == 0 and pair[-1] == 2 and pair.count(2) == 3  # <s> a </s></s> b </s>
    batch = tok(["cat", "the cat sat on the mat"], padding=True)["input_ids"]
    assert batch[0][-1] == tok.pad_token_id and len(batch[0]) == len(batch[1])
    assert tok.convert_tokens_to_ids("<mask>") == 4
    masked = tok("the <mask> sat")["input_ids"]
    assert masked.count(4) == 1 and len(masked) == len(tok("the cat sat")["input_ids"])


def test_auto_tokenizer_loads_folder(tok_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir[0]))
    assert tok.mask_token == "<mask>" and tok("a mat")["input_ids"] == load_tokenizer(tok_dir[0])("a mat")["input_ids"]


def test_tokenizer_cache_hit_and_key(tok_dir, docs, tmp_path, monkeypatch):
    _, info, again = tok_dir
    assert info["cached"] is False and again["cached"] is True and info["checksum"] == again["checksum"]
    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    other = train_tokenizer(docs[:-1], TokenizerConfig(vocab_size=400), tmp_path / "t2", model_max_length=64)
    assert other["checksum"] != info["checksum"] and other["cached"] is False
    meta = json.loads((tmp_path / "t2" / "tlc_tokenizer.json").read_text())
    assert meta["tokenizer"]["vocab_size"] == 400


def test_lowercase_option(docs, tmp_path, monkeypatch):
    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    train_tokenizer(docs, TokenizerConfig(vocab_size=350, lowercase=True), tmp_path / "lc", model_max_length=32)
    tok = load_tokenizer(tmp_path / "lc")
    assert tok.decode(tok("The CAT")["input_ids"], skip_special_tokens=True) == "the cat"


def test_load_tokenizer_missing_folder(tmp_path):
    from tlc_export.errors import DataSourceError

    with pytest.raises(DataSourceError, match="tokenizer"):
        load_tokenizer(tmp_path)
