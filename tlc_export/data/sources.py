"""Every `data.sources` kind as a stream of documents: nothing here holds a whole corpus.

A document carries the key the validation split hashes: a stable id where the source has one
(the `id_column`, or file name + block number for text files), else its position in the source.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from tlc_export.config.data import TextSource
from tlc_export.data.local import iter_rows, iter_text_blocks, resolve_glob
from tlc_export.errors import DataSourceError
from tlc_export.recipe import Recipe


class Document(NamedTuple):
    source: int  # index into data.sources
    position: int  # n-th document of its source (0-based)
    key: str  # what the validation split hashes, together with the source's identity
    text: str


def source_identity(src: TextSource) -> str:
    """What identifies a source in the split hash: its settings as written, so moving the run
    directory or reordering `data.sources` does not move documents between splits."""
    fields = src.model_dump(mode="json", include={"kind", "path", "name", "config", "split", "data_files", "column",
                                                   "rows_per_document"})
    return json.dumps(fields, sort_keys=True)


def builtin_documents_path(kind: str) -> Callable[[], Path]:
    # Imported on demand: each built-in module pulls its own archive readers.
    if kind == "brown":
        from tlc_export.data.brown import documents_path

        return documents_path
    if kind == "gcide":
        from tlc_export.data.gcide import documents_path

        return documents_path
    if kind == "austen":
        from tlc_export.data.austen import documents_path

        return documents_path
    raise DataSourceError(f"unknown built-in source '{kind}'")


def _keyed_texts(src: TextSource, recipe: Recipe, field: str) -> Iterator[tuple[str | None, str]]:
    """(stable key or None, text) pairs in the source's order; empty texts included. Keys: the id
    column, else the file and row/block number, else the row number (None: use the position)."""
    from tlc_export.data.fetch import iter_documents

    if src.kind in ("brown", "gcide", "austen"):
        for text in iter_documents(builtin_documents_path(src.kind)()):
            yield None, text
    elif src.kind == "text":
        for f in resolve_glob(src.path or "", recipe.base_dir, field=f"{field}.path"):
            rel = _relative(f, recipe.base_dir)
            for i, block in enumerate(iter_text_blocks(f)):
                yield f"{rel}#{i}", block
    elif src.kind in ("csv", "jsonl"):
        for f in resolve_glob(src.path or "", recipe.base_dir, field=f"{field}.path"):
            rel = _relative(f, recipe.base_dir)
            yield from _row_texts(iter_rows(f, src.kind), src, str(f), field, default_key=lambda i, r=rel: f"{r}#{i}")
    elif src.kind == "hf":
        from tlc_export.data.hf import iter_hf_rows

        yield from _row_texts(iter_hf_rows(src, recipe.base_dir, field), src, f"hf dataset '{src.name}'", field,
                              default_key=str)
    else:
        raise DataSourceError(f"{field}.kind: unknown source kind '{src.kind}'")


def _relative(f: Path, base: Path) -> str:
    try:
        return f.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return f.as_posix()


def _row_texts(
    rows: Iterator[dict[str, Any]], src: TextSource, where: str, field: str,
    default_key: Callable[[int], str | None],
) -> Iterator[tuple[str | None, str]]:
    """Rows → (key, text), joining `rows_per_document` consecutive non-empty rows into one text."""
    group: list[str] = []
    group_key: str | None = None
    for i, row in enumerate(rows):
        if i == 0:
            missing = [c for c in (src.column, src.id_column) if c and c not in row]
            if missing:
                name = "column" if missing[0] == src.column else "id_column"
                raise DataSourceError(
                    f"{where}: no column '{missing[0]}' (from `{field}.{name}`); the rows have columns "
                    f"{sorted(row)}. Set `{field}.{name}` to one of them"
                )
        value = row.get(src.column)
        text = "" if value is None else str(value)
        if not text.strip():
            continue
        if not group:
            group_key = str(row[src.id_column]) if src.id_column else default_key(i)
        group.append(text)
        if len(group) == src.rows_per_document:
            yield group_key, "\n".join(group)
            group = []
    if group:
        yield group_key, "\n".join(group)


def task_heldout_positions(src: TextSource, recipe: Recipe) -> frozenset[int]:
    """Positions of the documents this source must not give to pretraining: the texts of a built-in
    finetune task's dev and test splits, when the task is drawn from this very corpus (brown-genre
    from brown). Downstream evaluation text never sits in the pretraining corpus."""
    task = recipe.finetune.task if recipe.finetune is not None else None
    if task is not None and task.kind == "brown-genre" and src.kind == "brown":
        from tlc_export.data.brown_genre import heldout_positions

        return heldout_positions(task.dev_fraction, task.test_fraction)
    return frozenset()


def iter_source(src: TextSource, recipe: Recipe, index: int = 0) -> Iterator[Document]:
    """Documents of one `data.sources[i]` entry, lazily, in a deterministic order, less the documents
    `task_heldout_positions` keeps for a task's evaluation."""
    field = f"data.sources[{index}]"
    n = 0
    skip = task_heldout_positions(src, recipe)
    for raw, (key, text) in enumerate(_keyed_texts(src, recipe, field)):
        if raw in skip:
            continue
        if skip and key is None:
            key = str(raw)  # positions after a skipped document keep their own key (and validation hash)
        if not text.strip():
            continue
        yield Document(index, n, key if key is not None else str(n), text)
        n += 1
        if src.max_documents is not None and n >= src.max_documents:
            break
    if n == 0:
        raise DataSourceError(f"{field}: source '{src.label}' produced no text; check its path/column")


def source_size_bytes(src: TextSource, recipe: Recipe) -> int | None:
    """Roughly how many bytes of text the source holds (file sizes, or dataset metadata); None if unknown.

    Used for progress and ETA only. `max_documents` makes it an over-estimate.
    """
    try:
        if src.kind in ("brown", "gcide", "austen"):
            return builtin_documents_path(src.kind)().stat().st_size
        if src.kind in ("text", "csv", "jsonl"):
            files = resolve_glob(src.path or "", recipe.base_dir, field="data.sources")
            return sum(f.stat().st_size for f in files) or None
        if src.kind == "hf":
            from tlc_export.data.hf import hf_size_bytes

            return hf_size_bytes(src, recipe.base_dir)
    except (OSError, DataSourceError):
        return None
    return None
