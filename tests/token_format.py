"""Writes token files straight from the documented format (docs/ARCHITECTURE.md, data/token_files.py),
without the writer under test: inputs for pretraining tests, and an independent check of the reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def write_token_split(
    folder: Path, split: str, docs: list[np.ndarray], sources: list[int], labels: list[str],
    tokenizer_dir: Path, dtype: str = "uint16", eos_id: int = 2, vocab_size: int = 300,
    hashes: list[int] | None = None,
) -> None:
    """`docs`: token ids of each document, each already ending with `eos_id`. With `hashes` (each
    document's uint64 subsample hash) the files are version 2, which data.fraction can subsample."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.concatenate(docs).astype(dtype)
    ends = np.cumsum([len(d) for d in docs]).astype("<u8")
    src = np.asarray(sources, dtype="<u2")
    (folder / f"{split}.bin").write_bytes(ids.tobytes())
    (folder / f"{split}.idx").write_bytes(ends.tobytes())
    (folder / f"{split}.src").write_bytes(src.tobytes())
    files = {"tokens": f"{split}.bin", "document_ends": f"{split}.idx", "document_sources": f"{split}.src"}
    if hashes is not None:
        (folder / f"{split}.frac").write_bytes(np.asarray(hashes, dtype="<u8").tobytes())
        files["document_hashes"] = f"{split}.frac"
    tok_sha = hashlib.sha256((Path(tokenizer_dir) / "tokenizer.json").read_bytes()).hexdigest()
    header = {
        "format": "tlc-tokens", "version": 1 if hashes is None else 2, "split": split, "dtype": dtype, "tokens": int(len(ids)),
        "documents": len(docs), "bytes": 0, "eos_id": eos_id, "vocab_size": vocab_size, "tokenizer_sha256": tok_sha,
        "files": files,
        "sources": [{"source": i, "label": label, "documents": int((src == i).sum()),
                     "tokens": int(sum(len(d) for d, s in zip(docs, sources, strict=True) if s == i)), "bytes": 0}
                    for i, label in enumerate(labels)],
    }
    (folder / f"{split}.json").write_text(json.dumps(header))


def split_docs(ids: np.ndarray, eos_id: int = 2) -> list[np.ndarray]:
    """A flat id stream cut after every `eos_id` (the tail without one becomes a last document)."""
    cuts = np.flatnonzero(ids == eos_id) + 1
    parts = np.split(ids, cuts)
    out = [p for p in parts if len(p)]
    if len(out) and out[-1][-1] != eos_id:
        out[-1] = np.append(out[-1], eos_id).astype(ids.dtype)
    return out
