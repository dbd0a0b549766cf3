"""Data layer: streamed corpora, the hash split, the BPE tokenizer, token files, task data and
masked-LM batching.

Names are imported lazily so `import tlc_export.data.mlm` stays light (no tokenizers/transformers).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_corpus": "tlc_export.data.corpus",
    "iter_corpus": "tlc_export.data.corpus",
    "CorpusReader": "tlc_export.data.corpus",
    "iter_source": "tlc_export.data.sources",
    "Document": "tlc_export.data.sources",
    "SplitRouter": "tlc_export.data.split",
    "TokenSplit": "tlc_export.data.token_files",
    "token_dtype": "tlc_export.data.token_files",
    "write_token_files": "tlc_export.data.token_writer",
    "PackedRows": "tlc_export.data.mlm",
    "load_tokenizer": "tlc_export.data.tokenizer",
    "train_tokenizer": "tlc_export.data.tokenizer",
    "Example": "tlc_export.data.task",
    "TaskData": "tlc_export.data.task",
    "load_task": "tlc_export.data.task",
    "prepare_data": "tlc_export.data.prepare",
    "pack_sequences": "tlc_export.data.mlm",
    "mask_tokens": "tlc_export.data.mlm",
    "MLMBatches": "tlc_export.data.mlm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tlc_export.data' has no attribute {name!r}")
