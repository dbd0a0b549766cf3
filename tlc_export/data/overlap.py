"""Does downstream evaluation text sit in the pretraining corpus? Hashed word n-grams say.

Every dev and test example of the finetune task is cut into word n-grams (lower-cased runs of
letters and digits, so spacing and punctuation from different detokenizers do not matter; n = 13
as in the GPT-3 contamination study); every pretraining document is scanned once for them. An
example overlaps when any of its n-grams occurs in a pretraining document (an example shorter than
n words is one n-gram of its whole text). Unrelated texts share a 13-word run almost never, so any
overlap points at shared text: a leak, a quotation, or boilerplate.

The data stage scans every document in its main process as the documents pass to the tokenizer
workers: about 20 MB/s on one core of the 2-core AMD machine (Brown, 6 MB, 0.26 s of CPU), an order of
magnitude above the tokenizing pace, so it does not slow the stage down.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

NGRAM = 13
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int = NGRAM) -> set[int]:
    """Hashes of the word n-grams of `text` (the whole text when shorter; none for an empty one).
    Python's hash of a tuple of strings: stable within one process, which is all a scan needs."""
    w = words(text)
    if not w:
        return set()
    if len(w) <= n:
        return {hash(tuple(w))}
    return {hash(tuple(w[i:i + n])) for i in range(len(w) - n + 1)}


class OverlapCheck:
    """Hashed n-grams of the evaluation splits; `scan` each pretraining document, then `result`."""

    def __init__(self, splits: Mapping[str, Sequence[str]], n: int = NGRAM) -> None:
        self.n = n
        self.examples = {name: [ngrams(t, n) for t in texts] for name, texts in splits.items()}
        self.wanted: set[int] = set().union(*(g for ex in self.examples.values() for g in ex))
        self.found: set[int] = set()
        self.documents = 0
        self.documents_overlapping = 0

    def scan(self, text: str) -> None:
        """Record which evaluation n-grams occur in one pretraining document (a document shorter than
        n words is one n-gram, so an evaluation text that short is found only as a whole document)."""
        w = words(text)
        self.documents += 1
        hit = False
        for i in range(max(1, len(w) - self.n + 1)):
            h = hash(tuple(w[i:i + self.n]))
            if h in self.wanted:
                self.found.add(h)
                hit = True
        self.documents_overlapping += hit

    def passing_documents(self, documents: Iterable[T]) -> Iterator[T]:
        """Pass documents (anything with `.text`) through unchanged, scanning each on the way."""
        for d in documents:
            self.scan(d.text)  # type: ignore[attr-defined]
            yield d

    def result(self) -> dict[str, Any]:
        per_split = {}
        for name, ex in self.examples.items():
            hits = sum(1 for g in ex if g & self.found)
            grams = sum(len(g) for g in ex)
            matched = sum(len(g & self.found) for g in ex)
            per_split[name] = {"examples": len(ex), "examples_overlapping": hits,
                               "fraction_overlapping": hits / len(ex) if ex else 0.0,
                               "ngrams": grams, "ngrams_found": matched}
        return {"method": f"hashed word {self.n}-grams", "ngram": self.n, "splits": per_split,
                "pretraining_documents_scanned": self.documents,
                "pretraining_documents_overlapping": self.documents_overlapping}


def overlap_line(result: Mapping[str, Any]) -> str:
    """'dev 0 of 1,874 examples, test 0 of 1,902 share a 13-word run with the pretraining corpus (…)'."""
    parts = [f"{s} {v['examples_overlapping']:,} of {v['examples']:,} examples"
             for s, v in result.get("splits", {}).items()]
    return (f"{', '.join(parts)} share a {result.get('ngram')}-word run with the pretraining corpus "
            f"({result.get('pretraining_documents_scanned', 0):,} documents scanned, "
            f"{result.get('pretraining_documents_overlapping', 0):,} of them overlapping)")
