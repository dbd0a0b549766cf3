"""Token ids of sentence pairs and batches counted in tokens, as translation systems count them.

A batch holds pairs of similar length (sorted into length order, then cut when the padded
source + target tokens would pass the budget), so little compute goes to padding; the batches'
order is shuffled with a seed, so a (seed, epoch) always gives the same sequence of batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tlc_export.translation.loss import IGNORE
from tlc_export.translation.tokenizer import PAD_ID


@dataclass
class EncodedPairs:
    source: list[list[int]]  # each ends with </s>
    target: list[list[int]]  # each ends with </s>

    def __len__(self) -> int:
        return len(self.source)

    def tokens(self, i: int) -> int:
        return len(self.source[i]) + len(self.target[i])


def encode_pairs(tokenizers: Any, pairs: Sequence[Any], max_source_length: int,
                 max_target_length: int) -> EncodedPairs:
    """Tokenize `.source` and `.target` of every pair (truncated; `</s>` kept at the end)."""
    src = tokenizers.source([p.source for p in pairs], truncation=True, max_length=max_source_length)["input_ids"]
    tgt = tokenizers.target([p.target for p in pairs], truncation=True, max_length=max_target_length)["input_ids"]
    return EncodedPairs(list(src), list(tgt))


def token_batches(enc: EncodedPairs, max_tokens: int, *, seed: int | None = None) -> list[list[int]]:
    """Index lists of pairs whose padded source + target tokens fit `max_tokens` (a longer pair goes
    alone). Sorted by length; the batch order is shuffled when `seed` is given."""
    order = sorted(range(len(enc)), key=lambda i: (len(enc.source[i]), len(enc.target[i]), i))
    batches: list[list[int]] = []
    cur: list[int] = []
    s_max = t_max = 0
    for i in order:
        s, t = max(s_max, len(enc.source[i])), max(t_max, len(enc.target[i]))
        if cur and (len(cur) + 1) * (s + t) > max_tokens:
            batches.append(cur)
            cur, s, t = [], len(enc.source[i]), len(enc.target[i])
        cur.append(i)
        s_max, t_max = s, t
    if cur:
        batches.append(cur)
    if seed is not None:
        perm = np.random.default_rng(seed).permutation(len(batches))
        batches = [batches[j] for j in perm]
    return batches


def collate(enc: EncodedPairs, index: Sequence[int], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """input_ids / attention_mask (source, padded) and labels (target, IGNORE at padding); the model
    shifts labels right behind the decoder's start token itself."""
    s_len = max(len(enc.source[i]) for i in index)
    t_len = max(len(enc.target[i]) for i in index)
    ids = torch.full((len(index), s_len), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(index), s_len), dtype=torch.long)
    labels = torch.full((len(index), t_len), IGNORE, dtype=torch.long)
    for row, i in enumerate(index):
        src, tgt = enc.source[i], enc.target[i]
        ids[row, :len(src)] = torch.tensor(src)
        mask[row, :len(src)] = 1
        labels[row, :len(tgt)] = torch.tensor(tgt)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
