"""The pretraining corpus read once: a bounded tokenizer sample first, then every document in order.

`CorpusReader.take_sample` pulls documents from the start of every source in turn (the source with
the fewest sampled bytes next), keeping them in memory; `documents()` then replays those and goes
on reading the same open streams. So every source is read exactly once per run, even a one-shot
stream, and memory holds at most the sample.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tlc_export.data.sources import Document, iter_source, source_identity
from tlc_export.data.split import fraction_hash, top_up_selection, val_score
from tlc_export.recipe import Recipe


@dataclass
class Sample:
    """The tokenizer's training text and how it was drawn."""

    texts: list[str]
    bytes_per_source: list[int]
    documents_per_source: list[int]
    read_per_source: list[int]  # documents read from each source (sampled or held out)
    exhausted: bool  # the whole corpus fitted in the sample
    held_out: set[tuple[int, int]] = field(default_factory=set)  # (source, position) of validation documents

    def spec(self, sample_bytes: int) -> dict[str, Any]:
        return {"sample_bytes": sample_bytes, "bytes": sum(self.bytes_per_source),
                "documents": len(self.texts), "bytes_per_source": self.bytes_per_source,
                "whole_corpus": self.exhausted}


class CorpusReader:
    """One pass over `recipe.data.sources`, with the validation score of every document."""

    def __init__(self, recipe: Recipe) -> None:
        d = recipe.data
        self.recipe = recipe
        self.seed = d.seed
        self.val_fraction = d.val_fraction
        self.min_val = d.min_val_documents
        self.identities = [source_identity(s) for s in d.sources]
        self._streams = [iter_source(s, recipe, i) for i, s in enumerate(d.sources)]
        self._buffers: list[deque[Document]] = [deque() for _ in d.sources]
        self._exhausted = [False] * len(d.sources)

    def score(self, doc: Document) -> float:
        return val_score(self.seed, self.identities[doc.source], doc.key)

    def fraction_hash(self, doc: Document) -> int:
        return fraction_hash(self.seed, self.identities[doc.source], doc.key)

    def _pull(self, i: int) -> Document | None:
        if self._exhausted[i]:
            return None
        doc = next(self._streams[i], None)
        if doc is None:
            self._exhausted[i] = True
        else:
            self._buffers[i].append(doc)
        return doc

    def take_sample(self, sample_bytes: int) -> Sample:
        """Up to `sample_bytes` of training-bound text, each source contributing equally.

        Documents that the hash sends to validation are skipped. When the whole corpus fits, the
        documents that `min_val_documents` will move to validation are known and left out too.
        """
        n = len(self._streams)
        taken: list[list[Document]] = [[] for _ in range(n)]
        nbytes = [0] * n
        total = 0
        while total < sample_bytes and not all(self._exhausted):
            i = min((j for j in range(n) if not self._exhausted[j]), key=lambda j: (nbytes[j], j))
            doc = self._pull(i)
            if doc is None or self.score(doc) < self.val_fraction:
                continue
            size = len(doc.text.encode("utf-8"))
            taken[i].append(doc)
            nbytes[i] += size
            total += size
        exhausted = all(self._exhausted)
        held_out: set[tuple[int, int]] = set()
        if exhausted:
            docs = [d for buf in self._buffers for d in buf]
            scores = [(self.score(d), (d.source, d.position)) for d in docs]
            hashed = [pos for s, pos in scores if s < self.val_fraction]
            bound = [(s, pos) for s, pos in scores if s >= self.val_fraction]
            held_out = set(hashed) | top_up_selection(bound, len(docs), len(hashed), self.min_val)
        texts, per_bytes, per_docs = [], [0] * n, [0] * n
        for i in range(n):
            for d in taken[i]:
                if (d.source, d.position) in held_out:
                    continue
                texts.append(d.text)
                per_bytes[i] += len(d.text.encode("utf-8"))
                per_docs[i] += 1
        return Sample(texts, per_bytes, per_docs, [len(b) for b in self._buffers], exhausted, held_out)

    def documents(self) -> Iterator[Document]:
        """Every document in corpus order (sources in recipe order): buffered ones, then the rest."""
        for i in range(len(self._streams)):
            buf = self._buffers[i]
            while buf:
                yield buf.popleft()  # released as it goes: the sample does not outlive its source
            if not self._exhausted[i]:
                yield from self._streams[i]
                self._exhausted[i] = True


def iter_corpus(recipe: Recipe) -> Iterator[Document]:
    """Every document of `recipe.data.sources`, in recipe order, lazily."""
    for i, src in enumerate(recipe.data.sources):
        yield from iter_source(src, recipe, i)


def load_corpus(recipe: Recipe) -> list[str]:
    """All document texts in a list: for small corpora and tests; the data stage streams instead."""
    return [d.text for d in iter_corpus(recipe)]
