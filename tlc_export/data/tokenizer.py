"""Byte-level BPE tokenizer trained on the corpus, saved as a Hugging Face tokenizer folder.

RoBERTa's special tokens and ids: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4; the
post-processor wraps one text as `<s> x </s>` and a pair as `<s> a </s></s> b </s>`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from tlc_export.atomic import atomic_path
from tlc_export.config.data import TokenizerConfig
from tlc_export.data.fetch import tlc_home
from tlc_export.errors import DataSourceError

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
BOS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID = range(5)


def text_checksum(docs: list[str]) -> str:
    """sha256 of the documents, order included (NUL-separated, so boundaries count)."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _build(docs: list[str], cfg: TokenizerConfig) -> Any:
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    if cfg.lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 byte symbols up front: any input is encodable, so <unk> is never needed.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    # RoBERTa's mask swallows the space before it, so "a <mask>" masks the word " x".
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)])
    # Positional: the keyword for the CLS pair changed name between tokenizers releases.
    tok.post_processor = processors.RobertaProcessing(("</s>", EOS_ID), ("<s>", BOS_ID), True, False)
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise DataSourceError(f"internal error: special token {t} got id {tok.token_to_id(t)}, expected {i}")
    return tok


def _wrap(tok: Any, model_max_length: int) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=model_max_length,
        padding_side="right",
        # Byte-level BPE is lossless; the default clean-up would turn " ." into "." on decode.
        clean_up_tokenization_spaces=False,
    )


def train_tokenizer(
    docs: list[str], cfg: TokenizerConfig, out_dir: Path, *, model_max_length: int,
    sample: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or reuse from $TLC_HOME) a tokenizer on `docs` and save it into `out_dir`.

    Returns {"vocab_size", "checksum", "cached"}; `checksum` keys the cache: the training text's
    checksum, how it was sampled (`sample`, e.g. `Sample.spec()`), and the tokenizer settings.
    """
    if not docs:
        raise DataSourceError("cannot train the tokenizer: the training split is empty")
    key_payload = {"text": text_checksum(docs), "sample": sample, "tokenizer": cfg.model_dump(mode="json"),
                   "model_max_length": model_max_length, "format": 3}
    key = hashlib.sha256(json.dumps(key_payload, sort_keys=True).encode()).hexdigest()[:24]
    cache_dir = tlc_home() / "tokenizers" / key
    hit = (cache_dir / "tokenizer.json").is_file()
    if not hit:
        tok = _wrap(_build(docs, cfg), model_max_length)
        with atomic_path(cache_dir) as tmp:
            tok.save_pretrained(str(tmp))
            (tmp / "tlc_tokenizer.json").write_text(json.dumps(key_payload, indent=2) + "\n")
    with atomic_path(out_dir) as tmp:
        shutil.copytree(cache_dir, tmp)
    vocab_size = len(load_tokenizer(out_dir))
    return {"vocab_size": vocab_size, "checksum": key, "cached": hit}


def load_tokenizer(path: str | Path) -> Any:
    """Load a tokenizer folder written by `train_tokenizer` (or any HF tokenizer folder)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise DataSourceError(f"{path}: not a tokenizer folder (no tokenizer.json); run `tlc run --stage data` first")
    return AutoTokenizer.from_pretrained(str(path))
