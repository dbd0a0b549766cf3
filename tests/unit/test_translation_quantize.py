"""The project's quantizer on a Marian encoder-decoder: the tied table once, positions untouched."""

from __future__ import annotations

import torch

from tlc_export.compress.quantize import QuantConfig
from tlc_export.recipe import parse_recipe
from tlc_export.tasks.translation.compress import quantize_translation_
from tlc_export.tasks.translation.model import build_translation_model

RECIPE = """\
translation:
  sizes: [{layers: 2, hidden: 32, decoder_layers: 1, heads: 2, ffn: 64}]
  train: {time_budget_s: 1}
"""


def test_tied_table_quantized_once_and_positions_untouched(one_thread):
    cfg = parse_recipe(RECIPE).translation
    model = build_translation_model(cfg.grid()[0], cfg, 120)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    q = quantize_translation_(model, QuantConfig(bits=4, granularity="per-channel"))
    names = set(q)
    assert "model.shared.weight" in names
    assert not names & {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"}
    assert not [n for n in names if "embed_positions" in n]
    learned = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == learned  # every learned parameter, each once
    table = model.model.shared.weight
    for tied in (model.model.encoder.embed_tokens.weight, model.model.decoder.embed_tokens.weight, model.lm_head.weight):
        assert tied.data_ptr() == table.data_ptr()  # still one table
    assert torch.equal(table, q["model.shared.weight"].dequantize())
    assert len(torch.unique(q["model.shared.weight"].codes)) <= 16
    assert not torch.equal(table, before["model.shared.weight"])
    for n in ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight"):
        assert torch.equal(dict(model.named_parameters(remove_duplicate=False))[n], before[n])
