"""Pre-LayerNorm RoBERTa models built from a `ModelSize` (never from the hub), parameter and FLOP counts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForMaskedLM

from tlc_export.config.models import ModelSize

# RoBERTa numbers positions from pad_id + 1, so a sequence of n tokens needs n + 2 position rows.
_POSITION_OFFSET = 2


def mlm_config(
    size: ModelSize,
    vocab_size: int,
    max_seq_len: int,
    dropout: float,
    pad_id: int = 1,
    bos_id: int = 0,
    eos_id: int = 2,
) -> RobertaPreLayerNormConfig:
    """The transformers config for one grid size (pre-LN RoBERTa, single segment type)."""
    return RobertaPreLayerNormConfig(
        vocab_size=vocab_size,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.num_heads,
        intermediate_size=size.ffn_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=max_seq_len + _POSITION_OFFSET,
        type_vocab_size=1,
        layer_norm_eps=1e-5,  # fairseq's value; HF's 1e-12 default is too small for bf16
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=True,
    )


def build_mlm(
    size: ModelSize,
    vocab_size: int,
    max_seq_len: int,
    dropout: float,
    pad_id: int = 1,
    bos_id: int = 0,
    eos_id: int = 2,
) -> RobertaPreLayerNormForMaskedLM:
    """A freshly initialised masked-LM model (seed torch first for a reproducible init)."""
    cfg = mlm_config(size, vocab_size, max_seq_len, dropout, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)
    return RobertaPreLayerNormForMaskedLM(cfg)


def count_params(model: object, non_embedding: bool = False) -> int:
    """Distinct trainable-or-not parameters (tied weights counted once).

    `non_embedding=True` leaves out the word, position and token-type embedding tables (Kaplan et
    al.'s convention); the tied output projection shares storage with the word embedding, so it
    goes too.
    """
    total = 0
    seen: set[int] = set()
    for name, p in model.named_parameters():  # type: ignore[attr-defined]
        if id(p) in seen:
            continue
        seen.add(id(p))
        if non_embedding and "embeddings." in name and name.endswith("embeddings.weight"):
            continue
        total += p.numel()
    return total


def train_flops(params: int, tokens: int, layers: int, hidden: int, seq_len: int) -> float:
    """Training FLOPs for `tokens` tokens: 6·params·tokens + 12·layers·seq_len·hidden·tokens.

    6·N·T counts the matmuls against the weights (2 FLOPs per multiply-add forward, twice that
    backward). The attention term covers the two activation-by-activation products per layer,
    QKᵀ and attention·V: each is seq_len·hidden multiply-adds per token forward (2·s·h FLOPs), so
    4·s·h forward per layer and 12·s·h with the backward pass. The encoder attends in both
    directions, so unlike Kaplan et al.'s causal estimate nothing is halved. Pass as `params` the
    weights that are multiplied for every token (non-embedding parameters plus the vocab × hidden
    output projection for a full-vocabulary head).
    """
    return 6.0 * params * tokens + 12.0 * layers * seq_len * hidden * tokens


@dataclass(frozen=True)
class MLMFlops:
    """Training FLOPs of a masked-LM model, counted two ways.

    - `paper(tokens)`: the standard model-FLOPs count, 6·N·tokens + attention (`train_flops`), with
      N = non-embedding parameters + the vocab × hidden output projection (tied with the word
      embedding, so `count_params(non_embedding=True)` leaves it out). It charges the vocabulary
      head for every token, as a plain full-head MLM step computes it. This is what curves and
      rows call `flops` / `flops_paper`, and what MFU is computed from.
    - `computed(tokens, predicted)`: what our step actually multiplies: the encoder for every
      token that runs through the model (padding rows of a fixed-size micro-batch included), the
      head (`lm_head`: dense h×h, LayerNorm, decoder V×h) only for the `predicted` positions
      (masked-position head) — hardware FLOPs, for hardware utilisation.
    """

    body_params: int  # N minus the head: encoder layers, embedding LayerNorm
    head_params: int  # lm_head dense + LayerNorm + output bias + the V × h decoder
    layers: int
    hidden: int
    seq_len: int

    @property
    def params(self) -> int:
        return self.body_params + self.head_params

    def paper(self, tokens: float) -> float:
        return train_flops(self.params, tokens, self.layers, self.hidden, self.seq_len)  # type: ignore[arg-type]

    def computed(self, tokens: float, predicted: float) -> float:
        attention = 12.0 * self.layers * self.seq_len * self.hidden * tokens
        return 6.0 * self.body_params * tokens + attention + 6.0 * self.head_params * predicted


def mlm_flops(model: nn.Module, seq_len: int) -> MLMFlops:
    """`MLMFlops` of a `RobertaPreLayerNormForMaskedLM` (or any model with `lm_head` and a tied decoder)."""
    cfg = model.config  # type: ignore[attr-defined]
    vocab, hidden = int(cfg.vocab_size), int(cfg.hidden_size)
    n = count_params(model, non_embedding=True) + vocab * hidden
    head = sum(p.numel() for p in model.lm_head.parameters() if p is not model.lm_head.decoder.weight)  # type: ignore[attr-defined]
    head += vocab * hidden  # the tied decoder weight, counted in N through the line above
    return MLMFlops(body_params=n - head, head_params=head, layers=int(cfg.num_hidden_layers), hidden=hidden, seq_len=seq_len)


class LogitsOnly(nn.Module):
    """`model(input_ids, attention_mask).logits` as a plain tensor: one output for ONNX export and
    one graph for torch.compile."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
