"""Dynamic masking on the training device, with the same number of masked positions in every row.

`mask_tokens` (tlc_export.data.mlm) draws each token with probability p on the CPU, so the number
of masked positions varies from row to row and from batch to batch. Training instead masks
exactly k = round(p · seq_len) positions per row (BERT's `max_predictions_per_seq` practice), on
the device the model runs on:
- no host work and no host-to-device copy of masks on the critical path;
- the masked-position head sees a fixed count per row, so its shapes are static (no
  `.nonzero()`, no host sync, one torch.compile graph);
- the random draws are made for the whole global batch and each rank keeps its own rows, so the
  masks of a row do not depend on the number of processes or the micro-batch size.

Positions are the k highest of uniform scores over the maskable (non-special) tokens; a row with
fewer than k maskable tokens masks all of them. Of the masked positions 80 % become `<mask>`, 10 % a
uniformly drawn non-special token, 10 % stay (BERT's 80/10/10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tlc_export.data.mlm import IGNORE_INDEX


@dataclass(frozen=True)
class MaskSpec:
    """What masking needs to know about the tokenizer."""

    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    probability: float = 0.15


def masked_per_row(seq_len: int, probability: float) -> int:
    """k = round(p · seq_len), at least 1 and at most seq_len."""
    return min(seq_len, max(1, round(probability * seq_len)))


class DeviceMasker:
    """`masker(rows, seed)` → (inputs, labels) on the rows' device; labels = -100 where not masked.

    `rows` are this rank's rows `global[rank::world]` of a global batch of `global_rows` rows; the
    draws are made for all `global_rows` rows so that every split of the batch masks alike.
    """

    def __init__(self, spec: MaskSpec, device: torch.device | str) -> None:
        self.spec = spec
        self.device = torch.device(device)
        special = sorted({int(s) for s in spec.special_ids})
        allowed = torch.ones(spec.vocab_size, dtype=torch.bool)
        allowed[[s for s in special if 0 <= s < spec.vocab_size]] = False
        if not bool(allowed.any()):
            raise ValueError("every vocabulary id is special: nothing to draw random replacements from")
        # Built once on the host: nonzero() here never runs inside a training step.
        self.allowed_ids = allowed.nonzero().squeeze(1).to(self.device)
        self.special = torch.tensor(special, dtype=torch.long, device=self.device)
        self.generator = torch.Generator(device=self.device)

    def k(self, seq_len: int) -> int:
        return masked_per_row(seq_len, self.spec.probability)

    def __call__(
        self, rows: torch.Tensor, seed: int, *, global_rows: int | None = None, rank: int = 0, world_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, seq_len = rows.shape
        total = global_rows if global_rows is not None else n
        if len(range(rank, total, world_size)) != n:
            raise ValueError(f"{n} rows are not rows[{rank}::{world_size}] of a batch of {total}")
        k = self.k(seq_len)
        g = self.generator
        g.manual_seed(int(seed))
        dev = self.device
        scores = torch.rand((total, seq_len), generator=g, device=dev)[rank::world_size]
        action = torch.rand((total, k), generator=g, device=dev)[rank::world_size]
        pick = torch.randint(len(self.allowed_ids), (total, k), generator=g, device=dev)[rank::world_size]

        rows = rows.to(dev).long()
        scores = scores.masked_fill(torch.isin(rows, self.special), -1.0)
        top = scores.topk(k, dim=1, sorted=False)
        pos, valid = top.indices, top.values >= 0  # invalid: a special token filled a short row's quota
        original = rows.gather(1, pos)
        replaced = torch.where(
            action < 0.8,
            torch.full_like(original, self.spec.mask_token_id),
            torch.where(action < 0.9, self.allowed_ids[pick], original),
        )
        inputs = rows.scatter(1, pos, torch.where(valid, replaced, original))
        # Positions within a row are distinct (topk), so each scatter writes one value per cell.
        labels = torch.full_like(rows, IGNORE_INDEX).scatter(
            1, pos, torch.where(valid, original, torch.full_like(original, IGNORE_INDEX))
        )
        return inputs, labels
