"""Timing of greedy translation: sentences/s and per-sentence latency over a fixed set of sources.

One pass translates the whole set in batches of `batch_size` (in the set's order); `warmup` passes are
untimed, then `runs` passes are timed batch by batch. A batch's latency divided by its sentences is
each of its sentences' latency (at batch 1, the sentence's own); p50/p90 are over all timed
sentences, sentences/s is the timed sentences over the timed wall-clock. Every model decodes its own
greedy output, so output lengths differ: generated tokens are counted too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tlc_export.tasks.translation.tokenizer import EOS_ID, PAD_ID

Decode = Callable[[np.ndarray, np.ndarray], np.ndarray]


def source_batches(tokenizers: Any, sources: Sequence[str], batch_size: int, max_source_length: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Padded (input_ids, attention_mask) batches of `sources`, in order."""
    out = []
    for i in range(0, len(sources), batch_size):
        enc = tokenizers.source(list(sources[i:i + batch_size]), truncation=True, max_length=max_source_length,
                                padding=True, return_tensors="np")
        out.append((enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)))
    return out


def generated_tokens(ids: np.ndarray) -> int:
    """Tokens a greedy output holds after its start token, up to and including each row's `</s>`."""
    n = 0
    for row in np.asarray(ids)[:, 1:]:
        eos = np.nonzero(row == EOS_ID)[0]
        n += int(eos[0]) + 1 if len(eos) else int((row != PAD_ID).sum())
    return n


def time_decode(decode: Decode, batches: Sequence[tuple[np.ndarray, np.ndarray]], warmup: int, runs: int) -> dict[str, Any]:
    """{sentences (per pass), sentences_per_s, p50_ms, p90_ms (per sentence), batch_p50_ms, tokens_per_s,
    generated_tokens_per_sentence, runs}."""
    for _ in range(warmup):
        for ids, mask in batches:
            decode(ids, mask)
    per_sentence: list[float] = []
    per_batch: list[float] = []
    total_s = 0.0
    tokens = sentences = 0
    for _ in range(runs):
        for ids, mask in batches:
            t0 = time.perf_counter()
            out = decode(ids, mask)
            dt = time.perf_counter() - t0
            total_s += dt
            per_batch.append(dt * 1e3)
            per_sentence += [dt * 1e3 / len(ids)] * len(ids)
            tokens += generated_tokens(out)
            sentences += len(ids)
    return {
        "sentences": sum(len(ids) for ids, _ in batches), "runs": runs, "warmup": warmup,
        "sentences_per_s": sentences / total_s if total_s > 0 else None,
        "p50_ms": float(np.percentile(per_sentence, 50)), "p90_ms": float(np.percentile(per_sentence, 90)),
        "batch_p50_ms": float(np.percentile(per_batch, 50)),
        "tokens_per_s": tokens / total_s if total_s > 0 else None,
        "generated_tokens_per_sentence": tokens / max(1, sentences),
    }


def torch_greedy(model: Any, max_length: int) -> Decode:
    """`generate` (greedy, transformers' KV cache) as a Decode."""
    import torch

    from tlc_export.config.translation import TranslationDecoding
    from tlc_export.tasks.translation.decode import generation_kwargs

    kw = generation_kwargs(TranslationDecoding(strategy="greedy", max_length=max_length))
    model = model.eval()

    def decode(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **kw).numpy()

    return decode
