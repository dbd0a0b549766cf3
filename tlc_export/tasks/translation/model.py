"""The encoder-decoder, built from a config (no hub weights).

Why MarianMTModel: it is the standard Transformer of Vaswani et al. (post-LN, sinusoidal positions,
√d-scaled embeddings), which is what the paper trained for WMT14 En→Fr (with Tensor2Tensor; fairseq
was its RoBERTa toolkit). It ties the encoder, decoder and output embeddings into one table when
the vocabulary is shared (one table to quantize, once) and takes a separate target vocabulary
(`decoder_vocab_size`) when it is not; `generate` gives greedy and beam search with a KV cache; and
it is maintained in transformers 5 (both version sets we run on). FSMTForConditionalGeneration, the
fairseq WMT19 port, always keeps two vocabularies and untied tables and is barely maintained;
BartForConditionalGeneration has learned positions and a denoising-pretraining layout we do not need.
"""

from __future__ import annotations

from typing import Any

from tlc_export.config.translation import TranslationConfig, TranslationSize
from tlc_export.tasks.translation.tokenizer import EOS_ID, PAD_ID


def marian_config(size: TranslationSize, cfg: TranslationConfig, source_vocab: int,
                  target_vocab: int | None = None) -> Any:
    """A MarianConfig for one size; `target_vocab` None = the shared vocabulary (tied tables)."""
    from transformers import MarianConfig

    shared = target_vocab is None
    positions = max(cfg.max_source_length, cfg.max_target_length, cfg.decoding.max_length) + 2
    return MarianConfig(
        vocab_size=source_vocab,
        decoder_vocab_size=source_vocab if shared else target_vocab,
        share_encoder_decoder_embeddings=shared,
        tie_word_embeddings=shared,
        d_model=size.hidden,
        encoder_layers=size.layers,
        decoder_layers=size.num_decoder_layers,
        encoder_attention_heads=size.num_heads,
        decoder_attention_heads=size.num_heads,
        encoder_ffn_dim=size.ffn_size,
        decoder_ffn_dim=size.ffn_size,
        activation_function="relu",  # the Transformer's; Marian's own default is gelu
        dropout=cfg.dropout,
        attention_dropout=cfg.dropout,
        activation_dropout=cfg.dropout,
        max_position_embeddings=positions,
        scale_embedding=True,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        forced_eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
        bos_token_id=None,
    )


def build_translation_model(size: TranslationSize, cfg: TranslationConfig, source_vocab: int,
                            target_vocab: int | None = None, seed: int | None = None) -> Any:
    """A freshly initialised MarianMTModel (seeded: `seed`, else `cfg.train.seed`)."""
    import torch
    from transformers import MarianMTModel

    torch.manual_seed(cfg.train.seed if seed is None else seed)
    model = MarianMTModel(marian_config(size, cfg, source_vocab, target_vocab))
    # Generation settings live in generation_config in transformers 5; decoding passes its own, but a
    # saved model should decode sensibly on its own too.
    model.generation_config.max_length = cfg.decoding.max_length
    model.generation_config.num_beams = 1
    return model
