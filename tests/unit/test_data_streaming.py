"""Every source kind streams: the first document comes out while its input is still being written,
nothing re-reads an input, and the data stage reads each source exactly once (sample included)."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tlc_export.data.sources import iter_source
from tlc_export.recipe import parse_recipe

MODELS = "models: {sizes: [{layers: 1, hidden: 32}]}\npretrain: {time_budget_s: 1}\n"
TEXTS = [f"document number {i} says something about rivers and stones." for i in range(6)]


def _payload(kind: str) -> tuple[str, str]:
    """(head holding exactly the first document, tail with the rest) in the kind's file format."""
    if kind == "text":
        blocks = [t + "\n\n" for t in TEXTS]
        return blocks[0], "".join(blocks[1:])
    if kind == "csv":
        return "id,body\n" + f'0,"{TEXTS[0]}"\n', "".join(f'{i},"{t}"\n' for i, t in enumerate(TEXTS) if i)
    lines = [json.dumps({"body": t}) + "\n" for t in TEXTS]  # jsonl, and the built-ins' cache format
    return lines[0], "".join(lines[1:])


@pytest.mark.parametrize("kind", ["text", "csv", "jsonl", "brown"])
def test_source_yields_while_its_input_is_still_being_written(kind: str, tmp_path: Path, monkeypatch) -> None:
    """A named pipe can be read once, and only as fast as it is written: a reader that loaded the
    whole input before yielding would still be waiting when the writer asks for the first document."""
    fifo = tmp_path / f"corpus.{ {'text': 'txt', 'brown': 'jsonl'}.get(kind, kind) }"
    os.mkfifo(fifo)
    head, tail = _payload(kind)
    if kind == "brown":
        head, tail = (json.dumps(json.loads(x)["body"]) + "\n" for x in (head, tail.splitlines()[0] + "\n"))
        tail = tail + "".join(json.dumps(t) + "\n" for t in TEXTS[2:])
        monkeypatch.setattr("tlc_export.data.sources.builtin_documents_path", lambda kind: lambda: fifo)
        source = "{kind: brown}"
    else:
        column = ", column: body" if kind in ("csv", "jsonl") else ""
        source = f"{{kind: {kind}, path: {fifo.name}{column}}}"
    first_taken = threading.Event()
    waited: dict[str, bool] = {}

    def writer() -> None:
        with open(fifo, "w") as f:
            f.write(head)
            f.flush()
            waited["ok"] = first_taken.wait(timeout=20)
            f.write(tail)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    recipe = parse_recipe(f"data: {{sources: [{source}]}}\n" + MODELS, base_dir=tmp_path)
    docs = iter_source(recipe.data.sources[0], recipe, 0)
    first = next(docs)
    first_taken.set()
    rest = list(docs)
    thread.join(30)
    assert waited.get("ok") is True, "the first document only came out after the whole input was read"
    assert [first.text, *(d.text for d in rest)] == TEXTS
    assert [d.position for d in [first, *rest]] == list(range(len(TEXTS)))


class OneShotDataset:
    """Mimics a streaming `datasets.IterableDataset`: batches come from a generator that may run once."""

    column_names = ["text", "id"]

    def __init__(self, n: int) -> None:
        self.n, self.pulled, self.started = n, 0, False

    def iter(self, batch_size: int) -> Iterator[dict[str, list[Any]]]:
        if self.started:
            raise RuntimeError("the stream was consumed twice")
        self.started = True
        for start in range(0, self.n, batch_size):
            rows = range(start, min(start + batch_size, self.n))
            self.pulled += len(rows)
            yield {"text": [f"row {i} text" for i in rows], "id": [f"id-{i}" for i in rows]}


def test_hf_source_reads_batches_lazily_and_once(tmp_path: Path, monkeypatch) -> None:
    ds = OneShotDataset(5_000)
    monkeypatch.setattr("tlc_export.data.hf.open_dataset", lambda src, base, field: ds)
    recipe = parse_recipe("data: {sources: [{kind: hf, name: fake, id_column: id}]}\n" + MODELS, base_dir=tmp_path)
    docs = iter_source(recipe.data.sources[0], recipe, 0)
    first = next(docs)
    assert first.text == "row 0 text" and first.key == "id-0"
    assert ds.pulled < ds.n  # one bounded batch so far, not the dataset
    assert len(list(docs)) == ds.n - 1
    with pytest.raises(RuntimeError, match="twice"):
        next(iter_source(recipe.data.sources[0], recipe, 0))  # the fake really is one-shot


needs_datasets = pytest.mark.skipif(importlib.util.find_spec("datasets") is None,
                                    reason="`datasets` is not installed (pip install 'tlc-export[hf]')")


@needs_datasets
def test_hf_local_arrow_folder_and_streamed_json(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    texts = [f"article {i}: " + "words " * (i % 7 + 1) for i in range(50)]
    datasets.Dataset.from_dict({"text": texts, "id": [f"w{i}" for i in range(50)], "x": list(range(50))}).save_to_disk(
        str(tmp_path / "wiki"))
    with open(tmp_path / "books.jsonl", "w") as f:
        for i in range(9):
            f.write(json.dumps({"sentence": f"sentence {i}."}) + "\n")
    recipe = parse_recipe(
        "data:\n  sources:\n    - {kind: hf, name: wiki, id_column: id}\n"
        "    - {kind: hf, name: json, data_files: books.jsonl, column: sentence, rows_per_document: 4}\n"
        + MODELS, base_dir=tmp_path)
    wiki = list(iter_source(recipe.data.sources[0], recipe, 0))  # memory-mapped Arrow
    assert [d.text for d in wiki] == texts and [d.key for d in wiki] == [f"w{i}" for i in range(50)]
    books = list(iter_source(recipe.data.sources[1], recipe, 1))  # streaming=True by default
    assert [d.text for d in books] == ["\n".join(f"sentence {i}." for i in r) for r in (range(4), range(4, 8), [8])]
    from tlc_export.data.hf import open_dataset

    assert isinstance(open_dataset(recipe.data.sources[1], tmp_path, "f"), datasets.IterableDataset)


def test_data_stage_reads_every_source_once(tmp_path: Path, monkeypatch) -> None:
    """The tokenizer sample and the token files come from one pass: a second read of any source fails."""
    from rich.console import Console

    import tlc_export.data.sources as sources
    from tlc_export.data.token_files import TokenSplit
    from tlc_export.rundir import RunDir
    from tlc_export.stages.base import StageContext
    from tlc_export.tasks.classification.stages.data import DataStage

    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    real = sources._keyed_texts
    opened: list[int] = []

    def once(src, recipe, field):  # a generator per source that refuses a second consumption
        index = int(field.split("[")[1].split("]")[0])
        if index in opened:
            raise RuntimeError(f"source {index} consumed twice")
        opened.append(index)
        yield from real(src, recipe, field)

    monkeypatch.setattr(sources, "_keyed_texts", once)
    for name, n in (("a", 60), ("b", 30)):
        (tmp_path / name).mkdir()
        for i in range(n):
            (tmp_path / name / f"{i}.txt").write_text(f"{name} file {i} " + "tokens and more tokens " * (i % 5 + 3))
    recipe = parse_recipe(
        "data: {sources: [{kind: text, path: 'a/*.txt'}, {kind: text, path: 'b/*.txt'}], max_seq_len: 16,"
        " min_val_documents: 4, workers: 2}\ntokenizer: {vocab_size: 300, sample_bytes: 100000}\n" + MODELS,
        base_dir=tmp_path)
    out = tmp_path / "run" / "data"
    out.mkdir(parents=True)
    DataStage().run(StageContext(recipe, RunDir(tmp_path / "run"), out, {}, console=Console(quiet=True)))
    assert sorted(opened) == [0, 1]
    heads = [TokenSplit.open(out / "tokens", s).header for s in ("train", "val")]
    assert sum(h["documents"] for h in heads) == 90
