"""BPE vocabularies for translation: one shared by both languages, or one per side.

Byte-level BPE (as the pretraining tokenizer): any text is encodable without `<unk>`, and decoding
gives back the exact text, so BLEU is computed on detokenized output as sacrebleu expects. Every
sentence is encoded as `x </s>`; the decoder starts from `<pad>` (Marian's convention). Trained on
the training pairs only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlc_export.atomic import atomic_path
from tlc_export.errors import DataSourceError

if TYPE_CHECKING:  # serving imports this module for the token ids, without pydantic
    from tlc_export.config.translation import TranslationTokenizer

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
PAD_ID, EOS_ID, UNK_ID = range(3)


def _train(texts: Iterable[str], cfg: TranslationTokenizer, n: int | None) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=n)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS_ID)])
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise DataSourceError(f"internal error: special token {t} got id {tok.token_to_id(t)}, expected {i}")
    return _wrap(tok)


def _wrap(tok: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        padding_side="right", clean_up_tokenization_spaces=False,
    )


@dataclass
class TranslationTokenizers:
    """The source and target tokenizers (the same object when the vocabulary is shared)."""

    source: Any
    target: Any

    @property
    def shared(self) -> bool:
        return self.source is self.target

    def save(self, folder: Path) -> None:
        """`folder/` holds one tokenizer when shared, else `folder/source/` and `folder/target/`; atomic."""
        with atomic_path(folder) as tmp:
            tmp.mkdir(parents=True)
            if self.shared:
                self.source.save_pretrained(str(tmp))
            else:
                self.source.save_pretrained(str(tmp / "source"))
                self.target.save_pretrained(str(tmp / "target"))

    @classmethod
    def load(cls, folder: Path) -> TranslationTokenizers:
        from transformers import PreTrainedTokenizerFast

        if (folder / "tokenizer.json").is_file():
            tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
            return cls(tok, tok)
        if (folder / "source" / "tokenizer.json").is_file() and (folder / "target" / "tokenizer.json").is_file():
            return cls(PreTrainedTokenizerFast.from_pretrained(str(folder / "source")),
                       PreTrainedTokenizerFast.from_pretrained(str(folder / "target")))
        raise DataSourceError(f"{folder}: no translation tokenizer here (tokenizer.json, or source/ and target/)")


def train_tokenizers(pairs: Iterable[Any], cfg: TranslationTokenizer) -> TranslationTokenizers:
    """BPE on the training pairs (`.source`, `.target`): shared over both sides, or one per side. `pairs` may
    be a list or a re-iterable stream (`data.PairStream`); `cfg.train_pairs` caps what BPE reads."""
    pairs = bpe_sample(pairs, cfg.train_pairs)
    n = len(pairs) if isinstance(pairs, Sized) else None
    if n == 0 or (n is None and next(iter(pairs), None) is None):
        raise DataSourceError("cannot train the translation tokenizer: the training split is empty")
    if cfg.shared:
        tok = _train((t for p in pairs for t in (p.source, p.target)), cfg, 2 * n if n else None)
        return TranslationTokenizers(tok, tok)
    return TranslationTokenizers(_train((p.source for p in pairs), cfg, n),
                                 _train((p.target for p in pairs), cfg, n))


def bpe_sample(pairs: Iterable[Any], limit: int | None) -> Iterable[Any]:
    """At most `limit` pairs: a fixed hashed subset of a list, the first `limit` of a stream."""
    if limit is None:
        return pairs
    if isinstance(pairs, Sequence):
        from tlc_export.tasks.translation.data import cap_pairs

        return cap_pairs(list(pairs), limit, "bpe")
    sample = getattr(pairs, "sample", None)
    return sample(limit) if sample is not None else list(islice(iter(pairs), limit))
