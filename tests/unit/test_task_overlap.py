"""The quickstart's task stays out of pretraining: brown-genre splits by text, the pretraining corpus
leaves the dev and test texts out, and the data stage's n-gram check reports what overlaps."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlc_export.cli import main
from tlc_export.data.brown_genre import genre_label, split_documents
from tlc_export.data.fetch import FetchError
from tlc_export.data.overlap import OverlapCheck
from tlc_export.recipe import parse_recipe

VOCAB = [f"w{i}" for i in range(2000)]


def _prose(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(VOCAB, k=n))


def test_document_split_is_stratified_disjoint_and_stable() -> None:
    docs = {f"c{'a' if i < 300 else 'k'}{i:03d}": int(i >= 300) for i in range(400)}
    where = split_documents(docs, 0.1, 0.1)
    assert set(where) == set(docs)
    for label, n in ((0, 300), (1, 100)):
        mine = [w for d, w in where.items() if docs[d] == label]
        assert mine.count("test") == round(0.1 * n) and mine.count("dev") == round(0.1 * n)
    # Removing documents never moves the others between splits of their genre beyond the cut points.
    assert split_documents(dict(reversed(list(docs.items()))), 0.1, 0.1) == where


def test_genre_label_from_the_brown_category_letter() -> None:
    assert [genre_label(n) for n in ("ca01", "cj80", "ck01", "cl24", "cp29", "cr09")] == [0, 0, 1, 1, 1, 1]


def test_overlap_check_finds_a_leaked_passage_and_nothing_in_unrelated_text() -> None:
    rng = random.Random(0)
    corpus = [_prose(rng, 300) for _ in range(20)]
    leaked = " ".join(corpus[7].split()[100:130]).upper() + "!"  # case and punctuation do not hide it
    fresh = [_prose(random.Random(i + 100), 30) for i in range(5)]
    check = OverlapCheck({"dev": fresh, "test": [leaked, *fresh[:2]]})
    for doc in corpus:
        check.scan(doc)
    r = check.result()
    assert r["splits"]["dev"]["examples_overlapping"] == 0
    assert r["splits"]["test"]["examples_overlapping"] == 1
    assert r["splits"]["test"]["ngrams_found"] == 30 - 13 + 1  # every 13-gram of the leaked passage
    assert r["pretraining_documents_scanned"] == 20 and r["pretraining_documents_overlapping"] == 1


def test_a_text_shorter_than_the_ngram_is_found_only_as_a_whole_document() -> None:
    check = OverlapCheck({"test": ["a short line", "another short one"]})
    check.scan("This document contains a short line among other words that go on and on for a while.")
    check.scan("Another short one")
    assert check.result()["splits"]["test"]["examples_overlapping"] == 1


RECIPE = """\
data: {sources: [{kind: text, path: 'corpus/*.txt'}], max_seq_len: 16, min_val_documents: 3}
tokenizer: {vocab_size: 300}
models: {sizes: [{layers: 1, hidden: 32}]}
pretrain: {time_budget_s: 1}
finetune: {task: {kind: csv, path: task.csv, dev_fraction: 0.3, test_fraction: 0.3}, max_length: 16}
"""


def test_data_stage_reports_task_text_found_in_the_pretraining_corpus(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    rng = random.Random(1)
    (tmp_path / "corpus").mkdir()
    docs = [_prose(rng, 200) for _ in range(30)]
    for i, d in enumerate(docs):
        (tmp_path / "corpus" / f"{i}.txt").write_text(d)
    # 60 task rows: every third one is a 20-word passage copied from the corpus.
    rows = [{"text": " ".join(docs[i % 30].split()[50:70]) if i % 3 == 0 else _prose(rng, 20), "label": i % 2}
            for i in range(60)]
    with open(tmp_path / "task.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "r.yaml").write_text(RECIPE)
    run = tmp_path / "run"
    out = CliRunner().invoke(main, ["run", str(tmp_path / "r.yaml"), "--run-dir", str(run), "--until", "data"])
    assert out.exit_code == 0, out.output
    o = json.loads((run / "data" / "results.json").read_text())["task_overlap"]

    from tlc_export.data.task import load_task

    task = load_task(parse_recipe(RECIPE, base_dir=tmp_path).finetune.task, parse_recipe(RECIPE, base_dir=tmp_path))
    leaked = {r["text"] for i, r in enumerate(rows) if i % 3 == 0}
    for split, examples in (("dev", task.dev), ("test", task.test)):
        expected = sum(e.text in leaked for e in examples)
        assert expected > 0
        assert o["splits"][split]["examples"] == len(examples)
        assert o["splits"][split]["examples_overlapping"] == expected
    assert o["heldout_documents"] == {}
    assert "task overlap" in out.output


@pytest.fixture(scope="module")
def brown_rows():
    from tlc_export.data.brown_genre import load_brown_genre

    try:
        return load_brown_genre()
    except FetchError as exc:
        pytest.skip(f"registry unreachable or client missing: {exc}")


def test_brown_genre_is_fiction_k_to_r_split_by_text(brown_rows) -> None:
    from tlc_export.data.task import load_task

    docs = {r.document: (r.position, r.label) for r in brown_rows}
    assert len(docs) == 500
    fiction = sorted(p for p, lab in docs.values() if lab == 1)
    assert fiction == list(range(374, 500))  # categories k–r close the archive
    recipe = parse_recipe("models: {sizes: [{layers: 1, hidden: 32}]}\npretrain: {time_budget_s: 1}\n"
                          "finetune: {task: {kind: brown-genre, dev_fraction: 0.1, test_fraction: 0.1}}\n")
    task = load_task(recipe.finetune.task, recipe)
    assert task.split_unit == "document" and task.documents == {"train": 400, "dev": 50, "test": 50}
    by_text = {r.text: r.document for r in brown_rows}
    splits = [{by_text[e.text] for e in part} for part in (task.train, task.dev, task.test)]
    assert splits[0] & splits[1] == splits[0] & splits[2] == splits[1] & splits[2] == set()
    assert 0.6 < 1 - sum(e.label for e in task.test) / len(task.test) < 0.7  # the majority class: non-fiction


def test_pretraining_brown_leaves_out_the_tasks_dev_and_test_texts(brown_rows) -> None:
    """The pretraining stream has no 13-gram of dev or test; the full corpus has all of them."""
    from tlc_export.data.corpus import iter_corpus
    from tlc_export.data.task import load_task

    base = ("data: {sources: [{kind: brown}]}\nmodels: {sizes: [{layers: 1, hidden: 32}]}\n"
            "pretrain: {time_budget_s: 1}\n")
    recipe = parse_recipe(base + "finetune: {task: {kind: brown-genre, dev_fraction: 0.1, test_fraction: 0.1}}\n")
    task = load_task(recipe.finetune.task, recipe)
    kept = list(iter_corpus(recipe))
    assert len(kept) == 400
    check = OverlapCheck({"dev": [e.text for e in task.dev], "test": [e.text for e in task.test]})
    for d in kept:
        check.scan(d.text)
    assert all(v["examples_overlapping"] == 0 for v in check.result()["splits"].values())

    whole = list(iter_corpus(parse_recipe(base)))  # no brown-genre task: nothing left out
    assert len(whole) == 500
    # Documents keep their archive position as key, so the validation hash of a kept text does not move.
    assert {d.key: d.text for d in kept}.items() <= {d.key: d.text for d in whole}.items()
    leak = OverlapCheck({"test": [e.text for e in task.test]})
    for d in whole:
        leak.scan(d.text)
    assert leak.result()["splits"]["test"]["fraction_overlapping"] > 0.95


def test_the_data_stage_key_covers_the_finetune_task() -> None:
    """The task decides which documents pretraining leaves out and what the overlap check looks for."""
    from tlc_export.tasks.classification.stages.data import DataStage

    base = "models: {sizes: [{layers: 1, hidden: 32}]}\npretrain: {time_budget_s: 1}\n"
    keys = {DataStage().cache_key(parse_recipe(base + f"finetune: {{task: {t}}}\n"), {})
            for t in ("{kind: brown-genre}", "{kind: brown-genre, test_fraction: 0.2}", "{kind: rt-polarity}")}
    assert len(keys) == 3
    same = parse_recipe(base + "finetune: {task: {kind: brown-genre}, lr: 3.0e-4}\n")  # not a task field
    assert DataStage().cache_key(same, {}) in keys
