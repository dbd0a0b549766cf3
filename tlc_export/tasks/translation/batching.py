"""Token ids of sentence pairs and batches counted in tokens, as translation systems count them.

A batch holds pairs of similar length (sorted into length order, then cut when the padded
source + target tokens would pass the budget), so little compute goes to padding; the batches'
order is shuffled with a seed, so a (seed, epoch) always gives the same sequence of batches.

Two holders of encoded pairs share one interface (`PairIds`): `EncodedPairs` (Python lists, for dev
samples and small corpora) and `pair_files.PairFiles` (memory-mapped token files, for corpora of
any size). Batching works on their length arrays only (numpy), and a batch is a contiguous run of
the length order (`BatchPlan`), so planning 36 M pairs costs two arrays, not a list per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from tlc_export.tasks.translation.loss import IGNORE
from tlc_export.tasks.translation.tokenizer import PAD_ID


class PairIds(Protocol):
    """Encoded pairs: `source[i]` / `target[i]` are the ids of pair i (each ending with `</s>`)."""

    source: Any
    target: Any

    def __len__(self) -> int: ...

    def source_lengths(self) -> np.ndarray: ...

    def target_lengths(self) -> np.ndarray: ...


@dataclass
class EncodedPairs:
    source: list[list[int]]  # each ends with </s>
    target: list[list[int]]  # each ends with </s>

    def __len__(self) -> int:
        return len(self.source)

    def tokens(self, i: int) -> int:
        return len(self.source[i]) + len(self.target[i])

    def source_lengths(self) -> np.ndarray:
        return np.fromiter((len(s) for s in self.source), dtype=np.int64, count=len(self.source))

    def target_lengths(self) -> np.ndarray:
        return np.fromiter((len(t) for t in self.target), dtype=np.int64, count=len(self.target))


def encode_pairs(tokenizers: Any, pairs: Sequence[Any], max_source_length: int,
                 max_target_length: int) -> EncodedPairs:
    """Tokenize `.source` and `.target` of every pair (truncated; `</s>` kept at the end)."""
    src = tokenizers.source([p.source for p in pairs], truncation=True, max_length=max_source_length)["input_ids"]
    tgt = tokenizers.target([p.target for p in pairs], truncation=True, max_length=max_target_length)["input_ids"]
    return EncodedPairs(list(src), list(tgt))


@dataclass
class BatchPlan:
    """Micro-batches as contiguous runs of `order` (pair indices in length order): batch b is
    `order[bounds[b]:bounds[b + 1]]`."""

    order: np.ndarray  # [pairs] int64
    bounds: np.ndarray  # [batches + 1] int64

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def batch(self, b: int) -> list[int]:
        return self.order[self.bounds[b]:self.bounds[b + 1]].tolist()


def batch_plan(enc: PairIds, max_tokens: int) -> BatchPlan:
    """Pairs sorted by (source length, target length, index), cut greedily where the padded
    source + target tokens of the next pair would pass `max_tokens` (a longer pair goes alone).

    A holder with a `plan_cache` dict (the read-only `PairFiles`) keeps its plans: every size of a run
    reuses them (~1 minute for WMT14's 36 M pairs)."""
    cache = getattr(enc, "plan_cache", None)
    if cache is not None and max_tokens in cache:
        return cache[max_tokens]
    s_len, t_len = enc.source_lengths(), enc.target_lengths()
    order = np.lexsort((t_len, s_len))  # stable: ties keep index order
    bounds = [0]
    s_max = t_max = n = 0
    # One pass in Python over plain ints (~0.3 µs a pair): the greedy cut depends on the running maxima.
    for pos, (s, t) in enumerate(zip(s_len[order].tolist(), t_len[order].tolist(), strict=True)):
        s, t = max(s_max, s), max(t_max, t)
        if n and (n + 1) * (s + t) > max_tokens:
            bounds.append(pos)
            n, s, t = 0, s_len[order[pos]].item(), t_len[order[pos]].item()
        n += 1
        s_max, t_max = s, t
    if len(order):
        bounds.append(len(order))
    plan = BatchPlan(order.astype(np.int64), np.asarray(bounds, dtype=np.int64))
    if cache is not None:
        cache[max_tokens] = plan
    return plan


def batch_order(n_batches: int, seed: int | None) -> np.ndarray:
    """The order in which an epoch visits the batches: shuffled with `seed`, else as planned."""
    if seed is None:
        return np.arange(n_batches)
    return np.random.default_rng(seed).permutation(n_batches)


def token_batches(enc: PairIds, max_tokens: int, *, seed: int | None = None) -> list[list[int]]:
    """Index lists of pairs whose padded source + target tokens fit `max_tokens` (a longer pair goes
    alone). Sorted by length; the batch order is shuffled when `seed` is given."""
    plan = batch_plan(enc, max_tokens)
    return [plan.batch(int(b)) for b in batch_order(len(plan), seed)]


def collate(enc: PairIds, index: Sequence[int], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """input_ids / attention_mask (source, padded) and labels (target, IGNORE at padding); the model
    shifts labels right behind the decoder's start token itself."""
    srcs = [np.asarray(enc.source[i], dtype=np.int64) for i in index]
    tgts = [np.asarray(enc.target[i], dtype=np.int64) for i in index]
    s_len, t_len = max(len(s) for s in srcs), max(len(t) for t in tgts)
    ids = np.full((len(index), s_len), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(index), s_len), dtype=np.int64)
    labels = np.full((len(index), t_len), IGNORE, dtype=np.int64)
    for row, (src, tgt) in enumerate(zip(srcs, tgts, strict=True)):
        ids[row, :len(src)] = src
        mask[row, :len(src)] = 1
        labels[row, :len(tgt)] = tgt
    return {"input_ids": torch.from_numpy(ids).to(device), "attention_mask": torch.from_numpy(mask).to(device),
            "labels": torch.from_numpy(labels).to(device)}
