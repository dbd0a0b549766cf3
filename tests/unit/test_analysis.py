"""Figure 9 error analysis: module types, error statistics, and the plot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForSequenceClassification

from tlc_export.compress.analysis import MODULE_TYPES, compression_errors, module_type, plot_errors


def model(hidden: int, seed: int = 0) -> RobertaPreLayerNormForSequenceClassification:
    torch.manual_seed(seed)
    return RobertaPreLayerNormForSequenceClassification(RobertaPreLayerNormConfig(
        vocab_size=200, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=40, num_labels=2,
    ))


def test_module_type() -> None:
    p = "roberta_prelayernorm.encoder.layer.3."
    assert module_type(p + "attention.self.query.weight") == "attention.qkv"
    assert module_type(p + "attention.self.value.bias") == "attention.qkv"
    assert module_type(p + "attention.output.dense.weight") == "attention.out"
    assert module_type(p + "intermediate.dense.weight") == "ffn.in"
    assert module_type(p + "output.dense.weight") == "ffn.out"
    assert module_type(p + "attention.LayerNorm.weight") == "other"
    assert module_type("roberta_prelayernorm.embeddings.word_embeddings.weight") == "embeddings"
    assert module_type("roberta_prelayernorm.embeddings.LayerNorm.weight") == "other"
    assert module_type("classifier.out_proj.weight") == "other"


def test_rows_cover_module_types_and_shrink_with_bits() -> None:
    m = model(32)
    rows = {b: {r["module_type"]: r for r in compression_errors(m, bits=b, sparsity=0.6)} for b in (8, 6, 4)}
    assert set(rows[4]) == set(MODULE_TYPES)
    total = sum(p.numel() for p in m.parameters() if p.dim() == 2)
    assert sum(r["params"] for r in rows[4].values()) == total
    for t in MODULE_TYPES:
        r = rows[4][t]
        assert r["quant_mean"] > 0 and r["prune_mean"] > 0 and r["quant_var"] >= 0 and r["prune_var"] >= 0
        assert rows[8][t]["quant_mean"] < rows[6][t]["quant_mean"] < rows[4][t]["quant_mean"]
        # Pruning does not depend on bits.
        assert rows[8][t]["prune_mean"] == pytest.approx(r["prune_mean"])


def test_pruning_error_matches_definition() -> None:
    m = model(32)
    mats = [p.detach().abs().reshape(-1) for p in m.parameters() if p.dim() == 2]
    mags = torch.cat(mats).sort().values
    k = int(round(0.3 * mags.numel()))
    expected_mean = float(mags[:k].double().sum()) / mags.numel()  # pruned |W|, zeros elsewhere
    rows = compression_errors(m, bits=4, sparsity=0.3)
    n = sum(r["params"] for r in rows)
    got = sum(r["prune_mean"] * r["params"] for r in rows) / n
    assert got == pytest.approx(expected_mean, rel=1e-6)
    more = compression_errors(m, bits=4, sparsity=0.6)
    assert sum(r["prune_mean"] * r["params"] for r in more) / n > got


def test_plot_and_table(tmp_path: Path) -> None:
    by_size = {"2L-32H": compression_errors(model(32)), "2L-64H": compression_errors(model(64, seed=1))}
    path = tmp_path / "error_analysis.png"
    table = plot_errors(by_size, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert len(table) == 2 * len(MODULE_TYPES)
    assert {r["model"] for r in table} == set(by_size)
    assert all({"module_type", "quant_mean", "quant_std", "prune_mean", "prune_std"} <= r.keys() for r in table)
