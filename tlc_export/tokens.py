"""Text → padded `input_ids` / `attention_mask`, with `tokenizers` and NumPy only.

Batching is by length: inputs are sorted by token count (stable, so equal lengths keep their
order), cut into batches of `batch_size`, and each batch is padded to its own longest row. Short
sentences then never pay for long ones. The export stage measures every file's accuracy with
these same batches, which matters for ONNX Runtime's dynamic INT8: it quantizes activations with
one scale per batch, so a row's logits depend on which rows share its batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlc_export.errors import TlcError

DEFAULT_BATCH_SIZE = 32


class TokenizerError(TlcError):
    """A tokenizer folder is missing a file or a token; the message names the file."""


def _token_text(value: Any) -> str | None:
    """`"<pad>"` or `{"content": "<pad>", ...}` (both forms appear in tokenizer_config.json)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class ServingTokenizer:
    """A `tokenizers.Tokenizer` that truncates to `max_length` and knows its padding id."""

    def __init__(self, tokenizer: Any, max_length: int, pad_id: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.pad_id = int(pad_id)
        tokenizer.no_padding()
        # What transformers does for `tokenizer(text, truncation=True, max_length=...)`.
        tokenizer.enable_truncation(self.max_length, strategy="longest_first")

    @classmethod
    def from_dir(cls, folder: str | Path, max_length: int) -> ServingTokenizer:
        """From a folder holding `tokenizer.json` (and `tokenizer_config.json` naming the pad token)."""
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"{path}: missing; a tokenizer folder needs tokenizer.json")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise TokenizerError(f"{path}: not a readable tokenizers file ({e})") from e
        pad = "<pad>"
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            cfg_path = folder / name
            if cfg_path.is_file():
                try:
                    found = _token_text(json.loads(cfg_path.read_text(encoding="utf-8")).get("pad_token"))
                except (json.JSONDecodeError, AttributeError) as e:
                    raise TokenizerError(f"{cfg_path}: not a JSON object ({e})") from e
                if found:
                    pad = found
                    break
        pad_id = tok.token_to_id(pad)
        if pad_id is None:
            raise TokenizerError(f"{path}: the pad token {pad!r} is not in the vocabulary")
        return cls(tok, max_length, pad_id)

    def encode(self, texts: Sequence[str], pairs: Sequence[str | None] | None = None) -> list[list[int]]:
        """Token ids of each text (or text pair), special tokens added, truncated to `max_length`."""
        if pairs is not None and any(p is not None for p in pairs):
            inputs: list[Any] = [(t, p if p is not None else "") for t, p in zip(texts, pairs, strict=True)]
        else:
            inputs = list(texts)
        return [e.ids for e in self.tokenizer.encode_batch(inputs)]


def length_batches(lengths: Sequence[int], batch_size: int = DEFAULT_BATCH_SIZE) -> list[np.ndarray]:
    """Indices of the inputs in each batch: sorted by length (stable), `batch_size` per batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(ids: Sequence[Sequence[int]], index: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 `[len(index), longest]` for the rows `index` of `ids`."""
    width = max((len(ids[i]) for i in index), default=0)
    out = np.full((len(index), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(index), width), dtype=np.int64)
    for r, i in enumerate(index):
        row = ids[i]
        out[r, : len(row)] = row
        mask[r, : len(row)] = 1
    return out, mask
