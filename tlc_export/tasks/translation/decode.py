"""Greedy and beam decoding through transformers' `generate` (KV cache, batched), detokenized.

Sentences are decoded in batches of similar source length (less padding) and returned in input
order. Decoding is deterministic (no sampling), so a model translates a sentence the same way
every time; evaluation is fp32 and in eval mode, whatever the training precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tlc_export.config.translation import TranslationDecoding
from tlc_export.tasks.translation.tokenizer import EOS_ID, PAD_ID


def generation_kwargs(decoding: TranslationDecoding, strategy: str | None = None) -> dict[str, Any]:
    """`generate` arguments for the recipe's decoding (`strategy` overrides greedy/beam, e.g. greedy for curves)."""
    strategy = strategy or decoding.strategy
    beams = decoding.num_beams if strategy == "beam" else 1
    kw: dict[str, Any] = dict(do_sample=False, num_beams=beams, max_length=decoding.max_length,
                              pad_token_id=PAD_ID, eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID)
    if beams > 1:
        kw.update(length_penalty=decoding.length_penalty, early_stopping=True)
    return kw


@torch.inference_mode()
def translate(model: Any, tokenizers: Any, sources: Sequence[str], decoding: TranslationDecoding, *,
              max_source_length: int, strategy: str | None = None, batch_size: int | None = None) -> list[str]:
    """Translations of `sources` (detokenized text), in input order."""
    if not sources:
        return []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    kw = generation_kwargs(decoding, strategy)
    enc = tokenizers.source(list(sources), truncation=True, max_length=max_source_length)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    out: list[str] = [""] * len(enc)
    step = batch_size or decoding.batch_size
    try:
        for start in range(0, len(order), step):
            idx = order[start:start + step]
            width = max(len(enc[i]) for i in idx)
            ids = torch.full((len(idx), width), PAD_ID, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(enc[i])] = torch.tensor(enc[i])
                mask[row, :len(enc[i])] = 1
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)
            texts = tokenizers.target.batch_decode(gen.cpu().tolist(), skip_special_tokens=True)
            for i, t in zip(idx, texts, strict=True):
                out[i] = t.strip()
    finally:
        model.train(was_training)
    return out
