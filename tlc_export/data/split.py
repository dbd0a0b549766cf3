"""The validation split, decided per document in one pass by a stable hash.

A document goes to validation when its score, a hash of (seed, source, document key) mapped to
[0, 1), is below `val_fraction`. Nothing depends on how many documents came before or on how many
processes tokenize, so the split is the same on every machine and every re-run. `min_val_documents`
is honoured without a second pass: the documents with the smallest scores among those bound for
training are held back (at most `min_val_documents` of them, so memory stays bounded) and the
lowest-scoring ones move to validation at the end if the hash alone held out too few.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def val_score(seed: int, source_id: str, key: str) -> float:
    """Uniform in [0, 1), a pure function of its arguments (blake2b, not Python's salted hash())."""
    digest = hashlib.blake2b(f"{seed}\x1f{source_id}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def fraction_hash(seed: int, source_id: str, key: str) -> int:
    """A document's subsample hash (uint64): `data.fraction` keeps the training documents whose hash is
    below fraction · 2⁶⁴. Its own hash domain, independent of the validation score, so the subsample
    of the training documents is uniform; one threshold per fraction, so a smaller fraction's sample is
    inside every larger one's."""
    digest = hashlib.blake2b(f"{seed}\x1ffraction\x1f{source_id}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def fraction_threshold(fraction: float) -> int | None:
    """The exclusive uint64 bound of `fraction`'s subsample, None for the whole split (fraction ≥ 1)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return None if fraction >= 1 else int(fraction * 2.0**64)


def top_up_count(total: int, hashed_val: int, min_val: int) -> int:
    """How many training-bound documents must move to validation: up to `min_val`, never past half."""
    return max(0, min(min_val, total // 2) - hashed_val)


class SplitRouter(Generic[T]):
    """Feed documents in corpus order; get back (split, document) pairs, then the rest from `finish`.

    Every document comes back exactly once. Ties in score are broken by arrival order.
    """

    def __init__(self, val_fraction: float, min_val: int) -> None:
        self.val_fraction = val_fraction
        self.min_val = min_val
        self.total = 0
        self.hashed_val = 0
        # Max-heap (negated score) of the lowest-scoring training-bound documents seen so far.
        self._reserve: list[tuple[float, int, T]] = []
        self._order = itertools.count()
        self.topped_up: list[T] = []  # documents `finish` moved to validation

    def route(self, doc: T, score: float) -> list[tuple[str, T]]:
        self.total += 1
        if score < self.val_fraction:
            self.hashed_val += 1
            return [("val", doc)]
        if self.min_val == 0:
            return [("train", doc)]
        item = (-score, -next(self._order), doc)
        if len(self._reserve) < self.min_val:
            heapq.heappush(self._reserve, item)
            return []
        if item > self._reserve[0]:  # lower score (or same score, earlier) than the worst held back
            _, _, out = heapq.heapreplace(self._reserve, item)
            return [("train", out)]
        return [("train", doc)]

    def finish(self) -> list[tuple[str, T]]:
        """The held-back documents: the lowest-scoring ones to validation if needed, in arrival order."""
        by_score = sorted(self._reserve, reverse=True)  # lowest score first
        self._reserve = []
        n_move = top_up_count(self.total, self.hashed_val, self.min_val)
        moved = {id(item) for item in by_score[:n_move]}
        out = []
        for item in sorted(by_score, key=lambda it: -it[1]):  # arrival order
            out.append(("val" if id(item) in moved else "train", item[2]))
        self.topped_up = [doc for split, doc in out if split == "val"]
        return out


def top_up_selection(scores: Iterable[tuple[float, Any]], total: int, hashed_val: int, min_val: int) -> set[Any]:
    """Which documents `SplitRouter.finish` moves to validation, given (score, corpus position) of every
    training-bound document of a corpus that was read completely (the tokenizer sample of a small corpus)."""
    ranked = sorted(scores)
    return {position for _, position in ranked[: top_up_count(total, hashed_val, min_val)]}
