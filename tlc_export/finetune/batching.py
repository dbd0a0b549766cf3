"""Tokenize task examples once, then batch them with padding only up to each batch's longest row."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class _ExampleLike(Protocol):
    text: str
    label: int
    text_pair: str | None


@dataclass
class Encoded:
    """Token ids (unpadded, truncated to max_length) and labels of a list of examples."""

    ids: list[list[int]]
    labels: list[int]
    pad_id: int

    def __len__(self) -> int:
        return len(self.ids)


def encode_examples(tokenizer: Any, examples: Sequence[_ExampleLike], max_length: int) -> Encoded:
    """Tokenize with truncation and no padding; pairs are encoded as pairs (the tokenizer adds separators)."""
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has no pad token: save it with `pad_token` set (RoBERTa uses <pad>)")
    if not examples:
        return Encoded([], [], pad_id)
    texts = [e.text for e in examples]
    has_pair = any(getattr(e, "text_pair", None) is not None for e in examples)
    pairs = [e.text_pair or "" for e in examples] if has_pair else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
    return Encoded(ids=list(enc["input_ids"]), labels=[int(e.label) for e in examples], pad_id=pad_id)


def collate(enc: Encoded, index: Sequence[int], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """One batch padded to its own longest sequence (dynamic padding)."""
    width = max(len(enc.ids[i]) for i in index)
    ids = torch.full((len(index), width), enc.pad_id, dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    for row, i in enumerate(index):
        seq = enc.ids[i]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    labels = torch.tensor([enc.labels[i] for i in index], dtype=torch.long)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def length_sorted_batches(enc: Encoded, batch_size: int) -> Iterator[list[int]]:
    """Batches of similar length, so evaluation pads (and computes) as little as possible."""
    order = sorted(range(len(enc)), key=lambda i: len(enc.ids[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """An endless stream of shuffled batches; every epoch is a fresh permutation (last partial batch kept)."""
    if n == 0:
        raise ValueError("the training split is empty: check finetune.task (path, columns, max_train_examples)")
    while True:
        perm = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            yield perm[start : start + batch_size]
