"""The pretraining corpus: every recipe source as a list of documents, and the validation split."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tlc_export.config.data import TextSource
from tlc_export.data.local import load_hf_rows, read_table_column, read_text_documents, resolve_glob
from tlc_export.errors import DataSourceError
from tlc_export.recipe import Recipe


def _builtin(kind: str) -> Callable[[], list[str]]:
    # Imported on demand: each built-in module pulls its own archive readers.
    if kind == "brown":
        from tlc_export.data.brown import load_brown

        return load_brown
    if kind == "gcide":
        from tlc_export.data.gcide import load_gcide

        return load_gcide
    if kind == "austen":
        from tlc_export.data.austen import load_austen

        return load_austen
    raise DataSourceError(f"unknown built-in source '{kind}'")


def load_source(src: TextSource, recipe: Recipe, index: int = 0) -> list[str]:
    """Documents of one `data.sources[i]` entry, in a deterministic order."""
    field = f"data.sources[{index}]"
    if src.kind in ("brown", "gcide", "austen"):
        docs = _builtin(src.kind)()
    elif src.kind == "text":
        docs = read_text_documents(resolve_glob(src.path or "", recipe.base_dir, field=f"{field}.path"))
    elif src.kind in ("csv", "jsonl"):
        docs = []
        for f in resolve_glob(src.path or "", recipe.base_dir, field=f"{field}.path"):
            docs.extend(read_table_column(f, src.kind, src.column, field=f"{field}.column"))
    elif src.kind == "hf":
        rows = load_hf_rows(src.name or "", src.config, src.split)
        if rows and src.column not in rows[0]:
            raise DataSourceError(
                f"{field}: hf dataset '{src.name}' has no column '{src.column}' (has {sorted(rows[0])}); "
                f"set `{field}.column`"
            )
        docs = [str(r[src.column]) for r in rows]
    else:
        raise DataSourceError(f"{field}.kind: unknown source kind '{src.kind}'")
    docs = [d for d in docs if d.strip()]
    if src.max_documents is not None:
        docs = docs[: src.max_documents]
    if not docs:
        raise DataSourceError(f"{field}: source '{src.kind}' produced no text; check its path/column")
    return docs


def load_corpus(recipe: Recipe) -> list[str]:
    """All documents of `recipe.data.sources`, concatenated in recipe order."""
    docs: list[str] = []
    for i, src in enumerate(recipe.data.sources):
        docs.extend(load_source(src, recipe, i))
    return docs


def split_documents(
    docs: list[str], val_fraction: float, min_val: int, seed: int
) -> tuple[list[str], list[str]]:
    """Hold out a random `val_fraction` of documents (at least `min_val`) for validation.

    Both halves keep the corpus order. At most half the corpus is ever held out, so a tiny
    corpus still trains.
    """
    n = len(docs)
    if n < 2:
        raise DataSourceError(
            f"the corpus has {n} document(s); need at least 2 to hold out validation text. "
            "Add text, or split files into blank-line separated paragraphs"
        )
    n_val = min(max(min_val, round(val_fraction * n)), n // 2)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).choice(n, size=n_val, replace=False)] = True
    train = [d for d, c in zip(docs, chosen, strict=True) if not c]
    val = [d for d, c in zip(docs, chosen, strict=True) if c]
    return train, val
