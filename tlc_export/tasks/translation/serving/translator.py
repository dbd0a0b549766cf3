"""Translating text with a translation bundle: tokenizers → length-sorted batches → the ONNX Runtime greedy loop.

No torch, transformers or pydantic: a deployment needs `pip install onnxruntime tokenizers numpy`. The
loop is `tlc_export.tasks.translation.ort.OrtTranslator.greedy`, the one the export stage validates token for
token against the PyTorch model's `generate` and scores BLEU with, so the bundle translates as its
recorded BLEU was measured.

```
BUNDLE/encoder.onnx, decoder.onnx
BUNDLE/tokenizer/             tokenizer.json, tokenizer_config.json, … (shared vocabulary)
                              or tokenizer/source/ and tokenizer/target/ (one per language)
BUNDLE/tlc.json               family "translation"; files {path: {bytes, sha256}}, decoding, tokenizer, BLEU
BUNDLE/README.md
```
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlc_export.serving.bundle import FIX, META_FILE, BundleError, read_meta, verify_files
from tlc_export.tasks.translation.ort import DECODER_FILE, ENCODER_FILE, OrtTranslator
from tlc_export.tokens import (
    DEFAULT_BATCH_SIZE,
    ServingTokenizer,
    TokenizerError,
    length_batches,
    pad_batch,
)

FAMILY = "translation"
TOKENIZER_DIR = "tokenizer"
ENCODER_INPUTS = ("input_ids", "attention_mask")
# One cached decoder step (`tlc_export.tasks.translation.onnx`): these two plus cross_k/v.<i> and past_k/v.<i> per layer.
DECODER_INPUTS = ("decoder_input_ids", "attention_mask")
CACHE_INPUT = re.compile(r"(cross|past)_[kv]\.\d+")


@dataclass
class TranslationBundle:
    """An opened translation bundle: its folder and tlc.json."""

    root: Path
    meta: dict[str, Any]

    @property
    def decoding(self) -> dict[str, Any]:
        return self.meta["decoding"]

    @property
    def max_length(self) -> int:
        """Longest translation in tokens (the decoder start and `</s>` included), as `generate`'s max_length."""
        return int(self.decoding["max_length"])

    @property
    def max_source_length(self) -> int:
        return int(self.decoding["max_source_length"])

    def tokenizer_dir(self, side: str) -> Path:
        """The `source` or `target` tokenizer folder (the same folder when the vocabulary is shared)."""
        return self.root / str(self.meta["tokenizer"][side])

    @classmethod
    def open(cls, root: str | Path, verify: bool = True) -> TranslationBundle:
        """Read and check a translation bundle. Every file tlc.json lists must be there; `verify` also
        compares each with its recorded size and SHA-256 (a truncated or replaced file is reported, not run)."""
        root = Path(root)
        meta = read_meta(root)
        meta_path = root / META_FILE
        if meta.get("family") != FAMILY:
            raise BundleError(f"{meta_path}: family is {meta.get('family')!r}, not {FAMILY!r}; open it with "
                              "tlc_export.tasks.open_predictor, which picks the family's predictor")
        files = meta.get("files")
        if not isinstance(files, dict) or not files:
            raise BundleError(f"{meta_path}: no `files` (the bundle's files and checksums); {FIX}")
        for name in (ENCODER_FILE, DECODER_FILE):
            if name not in files:
                raise BundleError(f"{meta_path}: `files` does not list {name}; {FIX}")
        for key, fields in (("decoding", ("max_length", "max_source_length")), ("tokenizer", ("source", "target"))):
            section = meta.get(key)
            missing = [f for f in fields if not isinstance(section, dict) or section.get(f) is None]
            if missing:
                raise BundleError(f"{meta_path}: `{key}` lacks {', '.join(missing)}; {FIX}")
        missing_files = [rel for rel in files if not (root / rel).is_file()]
        if missing_files:
            raise BundleError(f"{root / missing_files[0]}: missing"
                              + (f" (and {len(missing_files) - 1} more listed in tlc.json)" if len(missing_files) > 1 else "")
                              + f"; this is not a complete bundle; {FIX}")
        if verify:
            verify_files(root, files)
        return cls(root, meta)


class Translator:
    """Translates texts with one bundle: `batch_size` sentences per greedy loop, batched by source length."""

    def __init__(self, bundle: TranslationBundle, batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.bundle = bundle
        self.batch_size = batch_size
        try:
            self.source = ServingTokenizer.from_dir(bundle.tokenizer_dir("source"), bundle.max_source_length)
        except TokenizerError as e:
            raise BundleError(f"{e}; {FIX}") from e
        target = bundle.tokenizer_dir("target") / "tokenizer.json"
        try:
            self.target = Tokenizer.from_file(str(target))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise BundleError(f"{target}: not a readable tokenizers file ({e}); {FIX}") from e
        try:
            self.ort = OrtTranslator.open(bundle.root, threads)
        except Exception as e:  # ORT raises its own exception types for unreadable or invalid models
            raise BundleError(f"{bundle.root}: ONNX Runtime cannot load {ENCODER_FILE} / {DECODER_FILE} "
                              f"({str(e).splitlines()[0][:300]}); {FIX}") from e
        for sess, name, want in ((self.ort.encoder, ENCODER_FILE, ENCODER_INPUTS),
                                 (self.ort.decoder, DECODER_FILE, DECODER_INPUTS)):
            got = [i.name for i in sess.get_inputs()]
            plain = [g for g in got if not (sess is self.ort.decoder and CACHE_INPUT.fullmatch(g))]
            if sorted(plain) != sorted(want):
                raise BundleError(f"{bundle.root / name}: graph inputs are {got}, expected {list(want)}; {FIX}")

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The greedy output ids of each text, in input order (starting with the decoder start `<pad>`,
        ending at `</s>` or at max_length, without the padding of finished rows)."""
        ids = self.source.encode(list(texts))
        out: list[list[int]] = [[] for _ in ids]
        eos = self.bundle.decoding.get("eos_token_id")
        for index in length_batches([len(x) for x in ids], self.batch_size):
            input_ids, mask = pad_batch(ids, index, self.source.pad_id)
            gen = self.ort.greedy(input_ids, mask, self.bundle.max_length)
            for row, i in enumerate(index):
                out[int(i)] = until_eos(gen[row], eos)
        return out

    def translate(self, texts: Sequence[str]) -> list[str]:
        """The translation of each text (detokenized, special tokens dropped), in input order."""
        if not texts:
            return []
        decoded = self.target.decode_batch(self.token_ids(texts), skip_special_tokens=True)
        return [t.strip() for t in decoded]


def until_eos(row: np.ndarray, eos: int | None) -> list[int]:
    """Ids up to and including the first `</s>` after the start token (what follows pads finished rows)."""
    ids = row.tolist()
    if eos is not None and eos in ids[1:]:
        return ids[: ids.index(eos, 1) + 1]
    return ids
