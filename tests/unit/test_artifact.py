"""Packed artifacts: exact round trip to the fake-quant model, and storage that shrinks honestly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from transformers import (
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForMaskedLM,
    RobertaPreLayerNormForSequenceClassification,
)

from tlc_export.compress.artifact import ArtifactError, load_artifact, load_model, save_artifact
from tlc_export.compress.masks import apply_masks_
from tlc_export.compress.quantize import QuantConfig, quantize_


def config(hidden: int = 32, vocab: int = 300) -> RobertaPreLayerNormConfig:
    return RobertaPreLayerNormConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=40, num_labels=3,
    )


def random_masks(model: torch.nn.Module, sparsity: float, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) >= sparsity for n, p in model.named_parameters()
            if p.dim() == 2 and "position" not in n}


def variant(cls, cfg, bits: int, sparsity: float, qcfg: QuantConfig | None = None, seed: int = 0):
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    masks = random_masks(model, sparsity) if sparsity else None
    if masks:
        apply_masks_(model, masks)
    quantized = None
    if bits < 32:
        qcfg = qcfg or QuantConfig(bits=bits)
        quantized = quantize_(model, QuantConfig(**{**qcfg.__dict__, "bits": bits}), masks=masks)
    return model, quantized, masks


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("bits", [8, 6, 4])
@pytest.mark.parametrize("sparsity", [0.0, 0.6])
def test_round_trip_logits_and_codes(tmp_path: Path, bits: int, sparsity: float) -> None:
    model, quantized, masks = variant(RobertaPreLayerNormForSequenceClassification, config(), bits, sparsity)
    path = tmp_path / "v.safetensors"
    report = save_artifact(path, model, quantized, masks, {"recipe_hash": "abc", "variant": "x.s60.b4"})
    assert report.storage_bytes == path.stat().st_size
    loaded = load_model(path)
    assert type(loaded) is RobertaPreLayerNormForSequenceClassification
    ids = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), rtol=0, atol=1e-6)
    art = load_artifact(path)
    assert set(art.quantized) == set(quantized)
    for n, q in quantized.items():
        assert torch.equal(art.quantized[n].codes, q.codes), n
        assert torch.equal(art.quantized[n].dequantize(), q.dequantize()), n
    if masks:
        assert set(art.masks) == set(masks)
        for n, m in masks.items():
            assert torch.equal(art.masks[n], m)
    assert art.meta["recipe_hash"] == "abc" and art.meta["bits"] == str(bits)
    assert float(art.meta["sparsity"]) == pytest.approx(sparsity, abs=0.02)
    assert art.config["hidden_size"] == 32
    # The paper's measure, computed independently: Σ kept × bits (all parameters quantized here).
    kept = sum(int(masks[n].sum()) if masks and n in masks else p.numel() for n, p in model.named_parameters())
    assert report.nonzero_params == kept and report.nonzero_bits == kept * bits
    assert report.fp32_bytes == 4 * sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("gran", "symmetric"), [("per-channel", True), ("block", False), ("block", True)])
def test_round_trip_other_grids(tmp_path: Path, gran: str, symmetric: bool) -> None:
    qcfg = QuantConfig(bits=4, granularity=gran, group_size=24, symmetric=symmetric)  # 24 ∤ 32: partial blocks
    model, quantized, masks = variant(RobertaPreLayerNormForSequenceClassification, config(), 4, 0.6, qcfg)
    path = tmp_path / "v.safetensors"
    save_artifact(path, model, quantized, masks, {})
    ids = torch.randint(0, 300, (2, 12))
    torch.testing.assert_close(logits(load_model(path), ids), logits(model, ids), rtol=0, atol=1e-6)
    assert load_artifact(path).meta["granularity"] == gran


def test_tied_masked_lm_and_excluded_params(tmp_path: Path) -> None:
    qcfg = QuantConfig(bits=6, exclude=("*LayerNorm*",))
    model, quantized, masks = variant(RobertaPreLayerNormForMaskedLM, config(), 6, 0.3, qcfg)
    path = tmp_path / "mlm.safetensors"
    save_artifact(path, model, quantized, masks, {})
    loaded = load_model(path)
    assert loaded.lm_head.decoder.weight is loaded.roberta_prelayernorm.embeddings.word_embeddings.weight
    ids = torch.randint(0, 300, (2, 12))
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), rtol=0, atol=1e-6)
    art = load_artifact(path)
    assert "lm_head.decoder.weight" not in art.quantized
    assert any("LayerNorm" in n for n in art.dense) and not any("LayerNorm" in n for n in art.quantized)


def test_very_sparse_tensor_uses_csr(tmp_path: Path) -> None:
    model, quantized, masks = variant(RobertaPreLayerNormForSequenceClassification, config(), 4, 0.97)
    path = tmp_path / "v.safetensors"
    save_artifact(path, model, quantized, masks, {})
    layout = json.loads(load_artifact(path).meta["layout"])
    assert "csr" in {e.get("sparse") for e in layout.values()}
    ids = torch.randint(0, 300, (2, 12))
    torch.testing.assert_close(logits(load_model(path), ids), logits(model, ids), rtol=0, atol=1e-6)


def test_storage_shrinks_with_compression(tmp_path: Path) -> None:
    cfg = config(hidden=128, vocab=1000)
    size: dict[tuple[int, float], int] = {}
    reports = {}
    for bits in (32, 8, 6, 4):
        for sparsity in (0.0, 0.6):
            model, quantized, masks = variant(RobertaPreLayerNormForSequenceClassification, cfg, bits, sparsity)
            r = save_artifact(tmp_path / f"b{bits}s{sparsity}.safetensors", model, quantized, masks, {})
            size[bits, sparsity] = r.storage_bytes
            reports[bits, sparsity] = r
    for s in (0.0, 0.6):
        assert size[32, s] > size[8, s] > size[6, s] > size[4, s]
    for bits in (32, 8, 6, 4):
        assert size[bits, 0.6] < size[bits, 0.0]
    fp32 = reports[32, 0.0].fp32_bytes
    assert size[32, 0.0] < 1.02 * fp32  # header + metadata negligible at this size
    # 4-bit + 60 % sparse ≈ 0.4·4/32 + 1/32 ≈ 0.08 of fp32 (+ scales, the unpruned tensors, metadata).
    assert size[4, 0.6] < 0.15 * fp32
    assert reports[4, 0.0].packed_code_bytes == pytest.approx(reports[4, 0.0].params / 2, rel=0.01)


def test_bad_files_raise(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such artifact"):
        load_artifact(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="junk.safetensors"):
        load_model(junk)

    other = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(2, np.float32)}, str(other), metadata={"format": "pt"})
    with pytest.raises(ArtifactError, match="not a tlc artifact"):
        load_artifact(other)


def test_mask_inconsistent_with_weights_raises(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = RobertaPreLayerNormForSequenceClassification(config()).eval()
    masks = random_masks(model, 0.5)
    quantized = quantize_(model, QuantConfig(bits=4))  # masks not applied: pruned positions nonzero
    with pytest.raises(ArtifactError, match="nonzero at positions its mask prunes"):
        save_artifact(tmp_path / "v.safetensors", model, quantized, masks, {})
    assert not (tmp_path / "v.safetensors").exists()


def test_mask_helpers() -> None:
    from tlc_export.compress.masks import MaskError, mask_sparsity, masks_from_zeros, model_sparsity

    torch.manual_seed(0)
    model = RobertaPreLayerNormForSequenceClassification(config()).eval()
    masks = random_masks(model, 0.6)
    apply_masks_(model, masks)
    assert mask_sparsity(masks) == pytest.approx(0.6, abs=0.02)
    # Kept weights may be exactly zero too (the embedding's padding row is initialised to 0).
    assert mask_sparsity(masks) <= model_sparsity(model, masks) < mask_sparsity(masks) + 0.01
    recovered = masks_from_zeros(model, masks)
    assert all(not bool((recovered[n] & ~masks[n]).any()) for n in masks)
    with pytest.raises(MaskError, match="shape"):
        apply_masks_(model, {next(iter(masks)): torch.ones(3, dtype=torch.bool)})
