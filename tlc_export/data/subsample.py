"""`data.fraction`: a deterministic, nested, document-level subsample of the training split.

The data stage stores every document's subsample hash (`<split>.frac`, `split.fraction_hash`);
a fraction keeps the documents whose hash is below fraction · 2⁶⁴. The validation split is never
subsampled, so every fraction is scored on the same validation documents, and one threshold per
fraction makes the 1 % sample a subset of the 5 % one. The kept documents are presented as one
virtual token array (`DocumentSubset`), so packing and batching work unchanged and nothing is
copied: a gather maps virtual offsets to the token file's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlc_export.data.split import fraction_threshold
from tlc_export.data.token_files import TokenSplit
from tlc_export.errors import StageError


def kept_documents(split: TokenSplit, fraction: float) -> np.ndarray:
    """Boolean mask over the split's documents: those `fraction` keeps."""
    threshold = fraction_threshold(fraction)
    n = len(split.document_ends)
    if threshold is None:
        return np.ones(n, dtype=bool)
    if split.document_hashes is None:
        raise StageError(
            f"{split.folder / (split.split + '.json')}: token files of version {split.header.get('version')} hold no "
            f"document hashes, so data.fraction={fraction:g} cannot subsample them; re-run the data stage "
            "(`tlc run RECIPE --force data`)"
        )
    return np.asarray(split.document_hashes) < np.uint64(threshold)


class DocumentSubset:
    """Some documents of a flat token array, concatenated in file order, as one read-only array.

    Supports `len()`, `.dtype` and indexing by an int, a slice or an integer array (what
    `PackedRows` uses); only the indexed tokens are read.
    """

    def __init__(self, ids: np.ndarray, document_ends: np.ndarray, keep: np.ndarray) -> None:
        ends = np.asarray(document_ends, dtype=np.int64)
        starts = np.concatenate([np.zeros(1, dtype=np.int64), ends[:-1]])
        keep = np.asarray(keep, dtype=bool)
        lengths = (ends - starts)[keep]
        self.ids = ids
        self.dtype = ids.dtype
        self.documents = int(keep.sum())
        self._file_starts = starts[keep]
        self._ends = np.cumsum(lengths)  # virtual end of each kept document
        self._starts = self._ends - lengths

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            pos = np.arange(len(self))[index]
        else:
            pos = np.asarray(index, dtype=np.int64)
        if pos.size and (pos.min() < 0 or pos.max() >= len(self)):
            raise IndexError(f"token offset out of range for {len(self)} tokens")
        doc = np.searchsorted(self._ends, pos, side="right")
        real = pos - self._starts[doc] + self._file_starts[doc]
        out = np.asarray(self.ids[real.reshape(-1)])
        return out.reshape(pos.shape)


def training_tokens(split: TokenSplit, fraction: float) -> tuple[np.ndarray | DocumentSubset, int]:
    """The token array pretraining reads for `fraction` (the file itself at 1.0), and its document count."""
    keep = kept_documents(split, fraction)
    if keep.all():
        return split.ids, len(keep)
    return DocumentSubset(split.ids, split.document_ends, keep), int(keep.sum())
