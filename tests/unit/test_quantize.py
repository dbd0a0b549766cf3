"""The quantizer against an independent (numpy, loop-per-group) implementation of the paper's formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import (
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForMaskedLM,
    RobertaPreLayerNormForSequenceClassification,
)

from tlc_export.compress.quantize import QuantConfig, QuantizationError, quantize_, quantize_tensor
from tlc_export.config.compress import QuantizeConfig
from tlc_export.errors import TlcError


def ref_group(v: np.ndarray, bits: int, symmetric: bool, integer_zp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Paper §4.2 on one group, straight from the formula (float64); `integer_zp`: q0 rounded to a multiple
    of Δ when the range holds 0."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        delta = np.abs(v).max() / qmax
        if delta == 0:
            return np.zeros_like(v), np.zeros_like(v)
        codes = np.clip(np.round(v / delta), -qmax, qmax)
        return codes, delta * codes
    q0, qn = v.min(), v.max()
    delta = (qn - q0) / (2**bits - 1)
    if delta == 0:
        return np.zeros_like(v), np.full_like(v, q0)
    if integer_zp and q0 <= 0 <= qn:
        q0 = -np.round(-q0 / delta) * delta
        codes = np.clip(np.round((v - q0) / delta), 0, 2**bits - 1)
        return codes, delta * codes + q0
    codes = np.round((np.clip(v, q0, qn) - q0) / delta)
    return codes, delta * codes + q0


def ref_quantize(w: np.ndarray, bits: int, gran: str, group: int, symmetric: bool,
                 integer_zp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    w = w.astype(np.float64)
    codes, deq = np.empty_like(w), np.empty_like(w)
    if w.ndim < 2 or gran == "per-tensor":
        c, d = ref_group(w.ravel(), bits, symmetric, integer_zp)
        return c.reshape(w.shape), d.reshape(w.shape)
    for r in range(w.shape[0]):
        if gran == "per-channel":
            codes[r], deq[r] = ref_group(w[r], bits, symmetric, integer_zp)
        else:
            for s in range(0, w.shape[1], group):
                codes[r, s : s + group], deq[r, s : s + group] = ref_group(w[r, s : s + group], bits, symmetric,
                                                                           integer_zp)
    return codes, deq


def tiny_config(**kw: int) -> RobertaPreLayerNormConfig:
    base = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=40, num_labels=2)
    base.update(kw)
    return RobertaPreLayerNormConfig(**base)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("gran", ["per-tensor", "per-channel", "block"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_matches_independent_formula(bits: int, gran: str, symmetric: bool) -> None:
    g = torch.Generator().manual_seed(bits * 7 + len(gran) + symmetric)
    w = torch.randn(7, 45, generator=g) * 0.05 + 0.01  # 45 cols: last block of 32 is partial
    cfg = QuantConfig(bits=bits, granularity=gran, group_size=16, symmetric=symmetric)
    q = quantize_tensor(w, cfg)
    codes, deq = ref_quantize(w.numpy(), bits, gran, 16, symmetric)
    np.testing.assert_array_equal(q.codes.numpy().astype(np.int64), codes.astype(np.int64))
    np.testing.assert_allclose(q.dequantize().numpy(), deq, rtol=0, atol=1e-6)
    assert q.codes.dtype == (torch.int8 if symmetric else torch.uint8)
    assert q.codes.shape == w.shape
    lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    assert int(q.codes.min()) >= lo and int(q.codes.max()) <= hi
    # Error of a rounding quantizer: at most half a step (+ float32 slack).
    scale, _ = q.expanded_grid()
    assert bool(((q.dequantize() - w).abs() <= scale / 2 + 1e-6).all())


@pytest.mark.parametrize("gran", ["per-tensor", "per-channel", "block"])
def test_at_most_2_to_the_k_values_per_group(gran: str) -> None:
    w = torch.randn(4, 64)
    q = quantize_tensor(w, QuantConfig(bits=3, granularity=gran, group_size=16))
    d = q.dequantize()
    groups = [d] if gran == "per-tensor" else list(d) if gran == "per-channel" else list(d.reshape(4, 4, 16).reshape(16, 16))
    for grp in groups:
        assert torch.unique(grp).numel() <= 2**3
    # Per-tensor default: the extremes are reproduced (q0 = min, q_{2^k-1} = max).
    if gran == "per-tensor":
        assert math.isclose(float(d.min()), float(w.min()), abs_tol=1e-7)
        assert math.isclose(float(d.max()), float(w.max()), abs_tol=1e-6)


def test_grid_shapes_and_vectors_are_per_tensor() -> None:
    w = torch.randn(6, 40)
    assert quantize_tensor(w, QuantConfig(granularity="per-tensor")).scale.shape == ()
    assert quantize_tensor(w, QuantConfig(granularity="per-channel")).scale.shape == (6, 1)
    assert quantize_tensor(w, QuantConfig(granularity="block", group_size=16)).scale.shape == (6, 3)
    bias = torch.randn(40)
    for gran in ("per-channel", "block"):
        q = quantize_tensor(bias, QuantConfig(granularity=gran))
        assert q.granularity == "per-tensor" and q.scale.shape == ()


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("gran", ["per-tensor", "per-channel", "block"])
def test_integer_zero_point_grid(bits: int, gran: str) -> None:
    """zero_point: integer — where a group's range holds 0, −offset/scale is an integer zero point in
    0 .. 2^k − 1 and the error stays ≤ Δ/2; a group whose range lacks 0 keeps the paper's q0 = min."""
    g = torch.Generator().manual_seed(bits + len(gran))
    w = torch.randn(7, 45, generator=g) * 0.05 + 0.01
    w[2] = w[2].abs() + 0.3  # a row (hence its groups) without 0 in range
    q = quantize_tensor(w, QuantConfig(bits=bits, granularity=gran, group_size=16, integer_zero_point=True))
    codes, deq = ref_quantize(w.numpy(), bits, gran, 16, False, integer_zp=True)
    np.testing.assert_array_equal(q.codes.numpy().astype(np.int64), codes.astype(np.int64))
    np.testing.assert_allclose(q.dequantize().numpy(), deq, rtol=0, atol=1e-6)
    scale, offset = q.expanded_grid()
    assert bool(((q.dequantize() - w).abs() <= scale / 2 + 1e-6).all())
    z = -offset.double() / scale.double()
    holds0 = torch.ones_like(z, dtype=torch.bool)
    if gran != "per-tensor":
        holds0[2] = False
    assert bool(((z - z.round()).abs()[holds0] < 1e-4).all())
    assert bool(((z.round() >= 0) & (z.round() <= 2**bits - 1))[holds0].all())
    paper = quantize_tensor(w, QuantConfig(bits=bits, granularity=gran, group_size=16))
    if gran != "per-tensor":  # the all-positive row keeps q0 = its group's min, as on the paper's grid
        assert torch.equal(q.offset[2], paper.offset[2]) and torch.equal(q.codes[2], paper.codes[2])
    # on the paper's grid these zero points are fractional: the check above can fail
    ps, po = paper.expanded_grid()
    pz = -po.double() / ps.double()
    assert float((pz - pz.round()).abs()[holds0].max()) > 1e-2


def test_symmetric_keeps_exact_zeros() -> None:
    w = torch.randn(8, 32)
    w[w.abs() < 0.5] = 0.0
    for gran in ("per-tensor", "per-channel", "block"):
        q = quantize_tensor(w, QuantConfig(bits=4, granularity=gran, symmetric=True, group_size=8))
        assert bool((q.dequantize()[w == 0] == 0).all())
        assert bool((q.offset == 0).all())


@pytest.mark.parametrize("symmetric", [False, True])
def test_constant_and_zero_tensors_are_exact(symmetric: bool) -> None:
    for value in (0.0, 0.37, -2.5):
        w = torch.full((3, 10), value)
        q = quantize_tensor(w, QuantConfig(bits=4, symmetric=symmetric))
        if not symmetric or value == 0.0:
            assert torch.equal(q.dequantize(), w)
            assert torch.isfinite(q.scale).all()
    # A constant block inside a varying tensor (block granularity): exact too.
    w = torch.randn(2, 16)
    w[0, :8] = 0.25
    q = quantize_tensor(w, QuantConfig(bits=4, granularity="block", group_size=8))
    assert torch.equal(q.dequantize()[0, :8], w[0, :8])


def test_non_finite_raises_with_parameter_name() -> None:
    model = RobertaPreLayerNormForSequenceClassification(tiny_config())
    name = "roberta_prelayernorm.encoder.layer.1.output.dense.weight"
    with torch.no_grad():
        dict(model.named_parameters())[name][0, 3] = float("nan")
    with pytest.raises(QuantizationError, match=r"encoder\.layer\.1\.output\.dense\.weight") as e:
        quantize_(model, QuantConfig(bits=4))
    assert isinstance(e.value, TlcError)
    with pytest.raises(QuantizationError, match="non-finite"):
        quantize_tensor(torch.tensor([1.0, float("inf")]), QuantConfig())


def test_quantize_model_in_place_with_masks_and_globs() -> None:
    torch.manual_seed(0)
    model = RobertaPreLayerNormForSequenceClassification(tiny_config())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = [n for n, p in model.named_parameters() if p.dim() == 2]
    masks = {n: torch.rand(before[n].shape) > 0.6 for n in names}
    with torch.no_grad():
        for n, m in masks.items():
            dict(model.named_parameters())[n].mul_(m)
    cfg = QuantConfig(bits=4, exclude=("*LayerNorm*",))
    out = quantize_(model, cfg, masks=masks)
    params = dict(model.named_parameters())
    assert not any("LayerNorm" in n for n in out)
    for n, p in params.items():
        if "LayerNorm" in n:
            assert torch.equal(p, before[n])  # excluded: untouched
            continue
        assert n in out
        assert torch.equal(p.detach(), out[n].dequantize())  # the model holds the fake-quant values
        if n in masks:
            assert bool((p[~masks[n]] == 0).all())  # pruned zeros stay exactly zero
            kept = masks[n]
            ref = before[n] * masks[n]
            scale, _ = out[n].expanded_grid()
            assert bool(((p - ref).abs()[kept] <= scale.expand_as(p)[kept] / 2 + 1e-6).all())
    # Without re-applying the mask the paper's [min, max] grid has no exact zero in general.
    w = before[names[0]] * masks[names[0]]
    assert not bool((quantize_tensor(w, QuantConfig(bits=4)).dequantize()[~masks[names[0]]] == 0).all())


def test_tied_weights_quantized_once() -> None:
    model = RobertaPreLayerNormForMaskedLM(tiny_config())
    emb = "roberta_prelayernorm.embeddings.word_embeddings.weight"
    assert model.lm_head.decoder.weight is dict(model.named_parameters())[emb]
    out = quantize_(model, QuantConfig(bits=4))
    assert emb in out and "lm_head.decoder.weight" not in out
    assert torch.equal(model.lm_head.decoder.weight, out[emb].dequantize())
    assert torch.unique(model.lm_head.decoder.weight).numel() <= 16


def test_config_from_recipe_and_validation() -> None:
    rc = QuantizeConfig(granularity="block", group_size=64, symmetric=True, exclude=["*LayerNorm*"])
    cfg = QuantConfig.from_recipe(rc, 6)
    assert (cfg.bits, cfg.granularity, cfg.group_size, cfg.symmetric) == (6, "block", 64, True)
    assert cfg.selects("a.dense.weight") and not cfg.selects("a.LayerNorm.weight")
    assert QuantConfig.from_recipe(QuantizeConfig(), 8).integer_zero_point  # the recipe's default grid
    assert not QuantConfig.from_recipe(QuantizeConfig(zero_point="paper"), 8).integer_zero_point
    with pytest.raises(ValueError, match="asymmetric"):  # pydantic's ValidationError is a ValueError
        QuantizeConfig(symmetric=True, zero_point="integer")
    for bad in (dict(bits=1), dict(bits=32), dict(granularity="per-row"), dict(group_size=1),
                dict(symmetric=True, integer_zero_point=True)):
        with pytest.raises(QuantizationError):
            QuantConfig(**bad)
