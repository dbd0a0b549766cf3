"""Model building, parameter counts and the training-FLOP formula."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from tlc_export.config.models import ModelSize
from tlc_export.models import build_mlm, count_params, mlm_config, train_flops
from tlc_export.pretrain.loss import MLMLoss


def test_config_follows_size_and_roberta_positions() -> None:
    size = ModelSize(layers=3, hidden=64, heads=4, ffn=96)
    cfg = mlm_config(size, vocab_size=321, max_seq_len=40, dropout=0.05)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (3, 64, 4, 96)
    assert cfg.max_position_embeddings == 42 and cfg.type_vocab_size == 1 and cfg.vocab_size == 321
    assert cfg.hidden_dropout_prob == cfg.attention_probs_dropout_prob == 0.05
    # A full-length sequence must fit RoBERTa's position ids (which start at pad_id + 1).
    model = build_mlm(size, 321, 40, 0.0).eval()
    out = model(input_ids=torch.randint(5, 321, (2, 40)))
    assert out.logits.shape == (2, 40, 321)


def test_count_params_dedups_tied_head_and_drops_embeddings() -> None:
    size = ModelSize(layers=2, hidden=32, heads=2)
    model = build_mlm(size, 300, 32, 0.0)
    h, v, p = 32, 300, 34
    # Per layer: Q, K, V, O (weights + biases), two pre-LNs, FFN in and out.
    per_layer = 4 * (h * h + h) + 2 * (2 * h) + (h * 4 * h + 4 * h) + (4 * h * h + h)
    # + embedding LN + final LN + lm_head (dense, LN, output bias); the decoder weight is the tied embedding.
    expected_non_emb = 2 * per_layer + 2 * h + 2 * h + (h * h + h + 2 * h + v)
    assert count_params(model, non_embedding=True) == expected_non_emb
    assert count_params(model) == expected_non_emb + v * h + p * h + h  # word, position, token-type tables


def test_train_flops_matches_counted_matmul_flops() -> None:
    size = ModelSize(layers=2, hidden=64, heads=2)
    vocab, seq, batch = 400, 32, 4
    model = build_mlm(size, vocab, seq, 0.0)
    loss_fn = MLMLoss(model, masked_only=False)
    ids = torch.randint(5, vocab, (batch, seq))
    with FlopCounterMode(display=False) as counter:
        loss_fn(ids, ids.clone()).backward()
    counted = counter.get_total_flops()
    params = count_params(model, non_embedding=True) + vocab * size.hidden
    estimate = train_flops(params, batch * seq, size.layers, size.hidden, seq)
    # The formula also counts biases/LayerNorm parameters as matmul weights: a few percent high.
    assert 0.9 * counted < estimate < 1.1 * counted, (estimate, counted)
