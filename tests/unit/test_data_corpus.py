"""Local corpus sources, the validation split, and the data stage end to end on a tiny corpus."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from rich.console import Console

from tlc_export.data.corpus import load_corpus, split_documents
from tlc_export.errors import DataSourceError
from tlc_export.recipe import parse_recipe

MODELS = "models: {sizes: [{layers: 1, hidden: 32}]}\npretrain: {time_budget_s: 1}\n"


def test_split_documents_disjoint_deterministic_with_minimum():
    docs = [f"doc {i}" for i in range(1000)]
    train, val = split_documents(docs, 0.005, 50, seed=0)
    assert len(val) == 50 and len(train) == 950 and not set(train) & set(val)
    assert train == [d for d in docs if d in set(train)]  # corpus order kept
    assert split_documents(docs, 0.005, 50, seed=0) == (train, val)
    assert split_documents(docs, 0.005, 50, seed=1)[1] != val
    assert len(split_documents(docs, 0.1, 5, seed=0)[1]) == 100
    assert len(split_documents(docs[:10], 0.005, 50, seed=0)[1]) == 5  # never more than half
    with pytest.raises(DataSourceError):
        split_documents(["only one"], 0.1, 1, seed=0)


def test_text_csv_jsonl_sources(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text("first para\nsame para\n\n\nsecond para\n")
    (tmp_path / "c" / "b.txt").write_text("third\n")
    (tmp_path / "t.csv").write_text("id,body\n1,row one\n2,\n3,row three\n")
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "json doc"}) + "\n")
    recipe = parse_recipe(
        "data:\n  sources:\n    - {kind: text, path: 'c/*.txt'}\n    - {kind: csv, path: t.csv, column: body}\n"
        "    - {kind: jsonl, path: t.jsonl}\n" + MODELS, base_dir=tmp_path,
    )
    assert load_corpus(recipe) == ["first para\nsame para", "second para", "third", "row one", "row three", "json doc"]


def test_missing_glob_and_column_errors(tmp_path):
    (tmp_path / "t.csv").write_text("id,body\n1,x\n")
    bad_glob = parse_recipe("data: {sources: [{kind: text, path: 'none/*.txt'}]}\n" + MODELS, base_dir=tmp_path)
    with pytest.raises(DataSourceError, match=r"data\.sources\[0\]\.path.*none/\*\.txt"):
        load_corpus(bad_glob)
    bad_col = parse_recipe("data: {sources: [{kind: csv, path: t.csv, column: text}]}\n" + MODELS, base_dir=tmp_path)
    with pytest.raises(DataSourceError, match=r"t\.csv.*'text'.*column"):
        load_corpus(bad_col)


def test_data_stage_writes_tokenizer_and_streams(tmp_path, monkeypatch):
    from tlc_export.data.tokenizer import EOS_ID, load_tokenizer
    from tlc_export.rundir import RunDir
    from tlc_export.stages.base import StageContext
    from tlc_export.stages.data import DataStage

    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "quiet", "runs", "falls"]
    (tmp_path / "corpus").mkdir()
    for i in range(8):
        paras = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 20))) + "." for _ in range(5)]
        (tmp_path / "corpus" / f"{i}.txt").write_text("\n\n".join(paras))
    recipe = parse_recipe(
        "data: {sources: [{kind: text, path: 'corpus/*.txt'}], max_seq_len: 16, min_val_documents: 4}\n"
        "tokenizer: {vocab_size: 300}\n" + MODELS, base_dir=tmp_path,
    )
    out = tmp_path / "run" / "data"
    out.mkdir(parents=True)
    ctx = StageContext(recipe=recipe, run_dir=RunDir(tmp_path / "run"), out_dir=out, inputs={},
                       console=Console(quiet=True))
    outputs = DataStage().run(ctx)

    assert outputs["documents"] == {"train": 36, "val": 4}
    train, val = np.load(out / "train_ids.npy"), np.load(out / "val_ids.npy")
    assert train.dtype == np.int32 and val.dtype == np.int32
    assert int((train == EOS_ID).sum()) == 36 and train[-1] == EOS_ID
    assert outputs["tokens"] == {"train": len(train), "val": len(val)}
    tok = load_tokenizer(out / "tokenizer")
    assert tok.model_max_length == 16
    first_doc = tok.decode(train[: int(np.argmax(train == EOS_ID))].tolist())
    all_docs = load_corpus(recipe)
    assert first_doc in all_docs
    results = json.loads((out / "results.json").read_text())
    assert results["tokens"]["train"] == len(train) and results["tokenizer"]["vocab_size"] == len(tok)


def test_hf_source_without_datasets_is_a_clear_error(tmp_path):
    import importlib.util

    if importlib.util.find_spec("datasets") is not None:
        pytest.skip("`datasets` is installed; this checks the message shown when it is not")
    recipe = parse_recipe("data: {sources: [{kind: hf, name: wikitext}]}\n" + MODELS, base_dir=tmp_path)
    with pytest.raises(DataSourceError, match=r"wikitext.*datasets.*kind: csv"):
        load_corpus(recipe)
