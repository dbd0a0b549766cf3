"""A tiny, learnable synthetic sentiment task with its own word-level tokenizer and model.

Used by the tests and smoke runs that must finish in seconds on a CPU: each sentence is random
filler words plus one polarity word, and the label is that word's polarity, so a 2-layer model
learns it in a few hundred steps while random weights sit at chance.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    PreTrainedTokenizerFast,
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForMaskedLM,
    RobertaPreLayerNormForSequenceClassification,
)

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
POSITIVE = ["good", "great", "fine", "superb", "lovely", "nice", "brilliant", "charming"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "terrible", "weak", "ugly"]


@dataclass
class ToyExample:
    """Same fields as tlc_export.data.Example."""

    text: str
    label: int
    text_pair: str | None = None


def filler_words(n: int = 280) -> list[str]:
    return [f"w{i:03d}" for i in range(n)]


def toy_examples(n: int, seed: int = 0, min_words: int = 4, max_words: int = 12) -> list[ToyExample]:
    rng = random.Random(seed)
    fill = filler_words()
    out = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(fill, k=rng.randint(min_words, max_words))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        out.append(ToyExample(" ".join(words), label))
    return out


def toy_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(SPECIALS + POSITIVE + NEGATIVE + filler_words())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
    )


def toy_config(tokenizer: PreTrainedTokenizerFast, layers: int = 2, hidden: int = 32, max_len: int = 32) -> RobertaPreLayerNormConfig:
    return RobertaPreLayerNormConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 16), intermediate_size=2 * hidden,
        max_position_embeddings=max_len + 2, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=0, eos_token_id=2, type_vocab_size=1, num_labels=2,
    )


def toy_mlm(tokenizer: PreTrainedTokenizerFast, layers: int = 2, hidden: int = 32, seed: int = 0) -> RobertaPreLayerNormForMaskedLM:
    """A random-init masked LM, standing in for a pretrain checkpoint."""
    import torch

    torch.manual_seed(seed)
    return RobertaPreLayerNormForMaskedLM(toy_config(tokenizer, layers, hidden))


def toy_classifier(tokenizer: PreTrainedTokenizerFast, layers: int = 2, hidden: int = 32, seed: int = 0) -> RobertaPreLayerNormForSequenceClassification:
    import torch

    torch.manual_seed(seed)
    return RobertaPreLayerNormForSequenceClassification(toy_config(tokenizer, layers, hidden))
