"""Token files: the data stage's output and what pretraining memory-maps.

`data/tokens/` holds, per split (`train`, `val`):

- `<split>.bin`: every document's token ids followed by `</s>`, concatenated; `uint16` when the
  vocabulary has at most 65,536 ids, else `uint32`; native little-endian, no header.
- `<split>.idx`: `uint64`, the end offset (exclusive, in tokens) of each document.
- `<split>.src`: `uint16`, the `data.sources` index each document came from.
- `<split>.frac`: `uint64`, each document's subsample hash (`split.fraction_hash`): `data.fraction`
  keeps the documents below fraction · 2⁶⁴ (version 2; version-1 files lack it and cannot be
  subsampled).
- `<split>.json`: the header: format, dtype, counts, tokenizer checksum, per-source counts, sha256
  of the three files.

Readers map the files with `np.memmap`: every process of a node shares the page cache, and only the
pages of the rows a process uses are ever read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlc_export.data.fetch import sha256_file
from tlc_export.errors import StageError

FORMAT = "tlc-tokens"
VERSION = 2
READABLE_VERSIONS = (1, 2)
TOKENS_DIR = "tokens"
SPLITS = ("train", "val")
DOC_END_DTYPE = np.dtype("<u8")
DOC_SOURCE_DTYPE = np.dtype("<u2")
DOC_HASH_DTYPE = np.dtype("<u8")


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every id below `vocab_size`."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def split_files(split: str) -> dict[str, str]:
    return {"tokens": f"{split}.bin", "document_ends": f"{split}.idx", "document_sources": f"{split}.src",
            "document_hashes": f"{split}.frac", "header": f"{split}.json"}


def tokenizer_sha256(tokenizer_dir: Path) -> str:
    """Checksum of the tokenizer the token files were written with (its tokenizer.json)."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        raise StageError(f"{tokenizer_dir}: no tokenizer.json; run the data stage first (`tlc run RECIPE --until data`)")
    return sha256_file(path)


def _map(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


@dataclass
class TokenSplit:
    """One split's token files, memory-mapped (read-only)."""

    folder: Path
    split: str
    header: dict[str, Any]
    ids: np.ndarray  # [tokens] uint16/uint32 memmap
    document_ends: np.ndarray  # [documents] uint64 memmap
    document_sources: np.ndarray  # [documents] uint16 memmap
    document_hashes: np.ndarray | None = None  # [documents] uint64 memmap (None: version-1 files)

    @classmethod
    def open(cls, folder: str | Path, split: str, *, tokenizer_sha: str | None = None) -> TokenSplit:
        """Map `folder/<split>.*`, checking the header against the files (and the tokenizer, if given)."""
        folder = Path(folder)
        files = split_files(split)
        head_path = folder / files["header"]
        rerun = "re-run the data stage (`tlc run RECIPE --force data`)"
        if not head_path.is_file():
            raise StageError(f"{head_path}: missing; run the data stage first (`tlc run RECIPE --until data`)")
        try:
            header = json.loads(head_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StageError(f"{head_path}: unreadable token-file header ({exc}); {rerun}") from None
        if header.get("format") != FORMAT or header.get("version") not in READABLE_VERSIONS:
            raise StageError(
                f"{head_path}: format {header.get('format')!r} version {header.get('version')!r}, expected "
                f"{FORMAT!r} version {VERSION}; {rerun}"
            )
        dtype = np.dtype(header["dtype"])
        if dtype not in (np.dtype("<u2"), np.dtype("<u4")):
            raise StageError(f"{head_path}: field `dtype` is {header['dtype']!r}, expected uint16 or uint32; {rerun}")
        n_tok, n_doc = int(header["tokens"]), int(header["documents"])
        hashed = int(header["version"]) >= 2
        for key, itemsize, count in (("tokens", dtype.itemsize, n_tok), ("document_ends", 8, n_doc),
                                     ("document_sources", 2, n_doc), *((("document_hashes", 8, n_doc),) if hashed else ())):
            path = folder / files[key]
            size = path.stat().st_size if path.is_file() else None
            if size != itemsize * count:
                raise StageError(
                    f"{path}: {'missing' if size is None else f'{size:,} bytes'}, but {head_path.name} says "
                    f"{count:,} × {itemsize} bytes; the files are incomplete or from another run; {rerun}"
                )
        if tokenizer_sha is not None and header.get("tokenizer_sha256") != tokenizer_sha:
            raise StageError(
                f"{head_path}: written with a different tokenizer than {folder.parent / 'tokenizer'} "
                f"(field `tokenizer_sha256`); the two come from different data-stage runs; {rerun}"
            )
        return cls(folder, split, header, _map(folder / files["tokens"], dtype, n_tok),
                   _map(folder / files["document_ends"], DOC_END_DTYPE, n_doc),
                   _map(folder / files["document_sources"], DOC_SOURCE_DTYPE, n_doc),
                   _map(folder / files["document_hashes"], DOC_HASH_DTYPE, n_doc) if hashed else None)

    @property
    def source_labels(self) -> list[str]:
        return [s["label"] for s in self.header.get("sources", [])]

    def source_of_tokens(self, offsets: np.ndarray) -> np.ndarray:
        """The `data.sources` index of the document holding each token offset."""
        doc = np.searchsorted(self.document_ends, np.asarray(offsets, dtype=np.uint64), side="right")
        return np.asarray(self.document_sources)[np.minimum(doc, len(self.document_sources) - 1)].astype(np.int64)
