"""Local corpus sources, their errors, and the data stage end to end on a tiny two-source corpus."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from rich.console import Console

from tlc_export.data.corpus import load_corpus
from tlc_export.errors import DataSourceError
from tlc_export.recipe import parse_recipe

MODELS = "models: {sizes: [{layers: 1, hidden: 32}]}\npretrain: {time_budget_s: 1}\n"


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
    # Validation already refuses both at parse time; these are the files changing after it (the data
    # stage reads them later), so the reader must say the same thing itself.
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "a.txt").write_text("a doc\n")
    (tmp_path / "t.csv").write_text("id,text\n1,x\n")
    bad_glob = parse_recipe("data: {sources: [{kind: text, path: 'none/*.txt'}]}\n" + MODELS, base_dir=tmp_path)
    bad_col = parse_recipe("data: {sources: [{kind: csv, path: t.csv, column: text}]}\n" + MODELS, base_dir=tmp_path)
    (tmp_path / "none" / "a.txt").unlink()
    (tmp_path / "t.csv").write_text("id,body\n1,x\n")
    with pytest.raises(DataSourceError, match=r"data\.sources\[0\]\.path.*none/\*\.txt"):
        load_corpus(bad_glob)
    with pytest.raises(DataSourceError, match=r"t\.csv.*'text'.*column"):
        load_corpus(bad_col)


def test_data_stage_writes_tokenizer_and_token_files(tmp_path, monkeypatch):
    from tlc_export.data.split import val_score
    from tlc_export.data.token_files import TokenSplit
    from tlc_export.data.tokenizer import EOS_ID, load_tokenizer
    from tlc_export.rundir import RunDir
    from tlc_export.stages.base import StageContext
    from tlc_export.tasks.classification.stages.data import DataStage

    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "quiet", "runs", "falls"]
    (tmp_path / "corpus").mkdir()
    for i in range(8):
        paras = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 20))) + "." for _ in range(5)]
        (tmp_path / "corpus" / f"{i}.txt").write_text("\n\n".join(paras))
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": f"json row {i} " + "light " * i}) + "\n"
                                              for i in range(1, 13)))
    recipe = parse_recipe(
        "data: {sources: [{kind: text, path: 'corpus/*.txt'}, {kind: jsonl, path: t.jsonl}], max_seq_len: 16,"
        " min_val_documents: 4, val_fraction: 0.05}\ntokenizer: {vocab_size: 300}\n" + MODELS, base_dir=tmp_path,
    )
    out = tmp_path / "run" / "data"
    out.mkdir(parents=True)
    ctx = StageContext(recipe=recipe, run_dir=RunDir(tmp_path / "run"), out_dir=out, inputs={},
                       console=Console(quiet=True))
    outputs = DataStage().run(ctx)

    # 40 paragraphs + 12 rows; the hash alone picks (by hand) these, topped up to 4 if fewer.
    texts = load_corpus(recipe)
    assert len(texts) == 52
    assert outputs["documents"]["train"] + outputs["documents"]["val"] == 52
    assert outputs["documents"]["val"] >= 4 and outputs["tokens"] == "data/tokens"
    train = TokenSplit.open(out / "tokens", "train")
    val = TokenSplit.open(out / "tokens", "val")
    assert train.ids.dtype == np.uint16 and int((np.asarray(train.ids) == EOS_ID).sum()) == len(train.document_ends)
    assert outputs["tokens_per_split"] == {"train": len(train.ids), "val": len(val.ids)}
    tok = load_tokenizer(out / "tokenizer")
    assert tok.model_max_length == 16
    first_doc = tok.decode(np.asarray(train.ids[: int(train.document_ends[0]) - 1]).tolist())
    assert first_doc in texts
    results = json.loads((out / "results.json").read_text())
    assert results["tokens"]["train"] == len(train.ids) and results["tokenizer"]["vocab_size"] == len(tok)
    # Per-source counts add up, and the tokenizer never trained on held-out text of this small corpus.
    per_source = results["sources"]
    assert [p["label"] for p in per_source] == ["text:corpus/*.txt", "jsonl:t.jsonl"]
    assert per_source[0]["train"]["documents"] + per_source[0]["val"]["documents"] == 40
    assert sum(p["val"]["documents"] for p in per_source) == len(val.document_ends)
    assert results["tokenizer"]["sample"]["whole_corpus"] is True
    assert results["tokenizer"]["validation_documents_in_sample"] == 0
    assert results["tokenizer"]["held_out_before_training"] == outputs["documents"]["val"]
    hashed = sum(val_score(0, s, k) < 0.05 for s, k in _keys(recipe))
    assert results["split"]["hashed_val_documents"] == hashed


def _keys(recipe):
    from tlc_export.data.corpus import iter_corpus
    from tlc_export.data.sources import source_identity

    ids = [source_identity(s) for s in recipe.data.sources]
    return [(ids[d.source], d.key) for d in iter_corpus(recipe)]


def test_hf_source_without_datasets_is_a_clear_error(tmp_path, monkeypatch):

    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):  # as if `datasets` were not installed
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    recipe = parse_recipe("data: {sources: [{kind: hf, name: wikitext}]}\n" + MODELS, base_dir=tmp_path)
    with pytest.raises(DataSourceError, match=r"data\.sources\[0\].*wikitext.*tlc-export\[hf\].*kind: csv"):
        load_corpus(recipe)
