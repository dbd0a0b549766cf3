"""ONNX export: one exported graph, rewritten with fp32 values / our INT8 and INT4 codes, checked in ORT."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

from tlc_export.compress.quantize import QuantConfig, quantize_
from tlc_export.errors import ExportMismatchError
from tlc_export.export import validate as V
from tlc_export.export.int4 import int4_model, tensorrt_int4_ready
from tlc_export.export.onnx_export import export_template, save_model
from tlc_export.export.qdq import rewrite_weights
from tlc_export.export.trt_rules import check_tensorrt_onnx

VOCAB = 300


def _model(hidden: int = 64) -> torch.nn.Module:
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForSequenceClassification

    torch.manual_seed(0)
    cfg = RobertaPreLayerNormConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=2 * hidden, max_position_embeddings=130, num_labels=3, type_vocab_size=1,
    )
    m = RobertaPreLayerNormForSequenceClassification(cfg).eval()
    with torch.no_grad():  # trained-looking: non-zero biases, LayerNorm weights ≠ 1
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    m = _model()
    tpl = export_template(m, tmp_path_factory.mktemp("onnx") / "graph.onnx")
    return m, tpl


def _block4(m: torch.nn.Module, symmetric: bool, block: int = 32) -> tuple[torch.nn.Module, dict]:
    """A fake-quant copy of `m` with 4-bit block codes on its weight matrices (the compress quantizer)."""
    mq = copy.deepcopy(m)
    q = quantize_(mq, QuantConfig(bits=4, granularity="block", group_size=block, symmetric=symmetric, matrices_only=True))
    return mq, q


def _batch(b: int, s: int, seed: int = 1) -> V.Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (b, s), generator=g)
    mask = torch.ones_like(ids)
    for i in range(b):  # ragged padding: row i keeps s - i tokens
        mask[i, max(1, s - i):] = 0
    ids[mask == 0] = 1
    return V.Batch(ids.numpy(), mask.numpy(), np.zeros(b, dtype=np.int64))


def _with_masks(m: torch.nn.Module, frac: float = 0.5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    masks = {n: torch.rand(p.shape, generator=g) > frac for n, p in m.named_parameters()
             if p.dim() == 2 and "position" not in n and "token_type" not in n}
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    return masks


def _weights_from_ort(proto: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    """Run the graph with the rewritten weight tensors as extra outputs: what ORT really computes."""
    import onnxruntime as ort

    p = copy.deepcopy(proto)
    for n in names:
        p.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    sess = ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"])
    b = _batch(1, 4)
    outs = sess.run(names, b.feeds())
    return dict(zip(names, outs, strict=True))


def test_fp32_matches_padded_batches_and_dynamic_axes(exported, tmp_path):
    m, tpl = exported
    proto = tpl.load()
    rewrite_weights(proto, tpl.refs, {}, m.state_dict())
    path = tmp_path / "fp32.onnx"
    save_model(proto, path)
    V.check(path)
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [TensorProto.INT64] * 2
    for b, s in [(1, 5), (7, 5), (1, 128), (7, 128)]:
        batches = [_batch(b, s)]
        d, tol, got = V.compare(path, V.torch_logits(m, batches), batches, 1e-4)
        assert got[0].shape == (b, 3) and d <= tol


def test_int8_codes_exact_and_dequant_equals_fake_quant(exported):
    m, tpl = exported
    mq = copy.deepcopy(m)
    masks = _with_masks(mq)
    qd = quantize_(mq, QuantConfig(bits=8, granularity="per-channel"), masks=masks)
    proto = tpl.load()
    rep = rewrite_weights(proto, tpl.refs, qd, mq.state_dict(), container="int8")
    onnx.checker.check_model(proto, full_check=True)
    assert len(rep.quantized) == sum(1 for q in qd.values() if len(q.shape) == 2)
    inits = {i.name: i for i in proto.graph.initializer}
    by_param = {r.param: r for r in tpl.refs.values()}
    names = []
    for pname in rep.quantized:
        ref = by_param[pname]
        codes = numpy_helper.to_array(inits[f"{ref.name}__codes"])
        assert inits[f"{ref.name}__codes"].data_type == TensorProto.UINT8  # paper grid: unsigned codes
        want = qd[pname].codes.numpy()
        np.testing.assert_array_equal(codes, want.T if ref.transposed else want)
        names.append(ref.name)
    got = _weights_from_ort(proto, names)
    for pname, name in zip(rep.quantized, names, strict=True):
        ref = by_param[pname]
        w = got[name].T if ref.transposed else got[name]
        fq = qd[pname].dequantize().numpy()
        assert np.abs(w - fq).max() <= 1e-6 * np.abs(fq).max()
        if pname in masks:  # pruned positions are exact zeros although the grid has no 0
            assert np.all(w[~masks[pname].numpy()] == 0)
    batches = [_batch(4, 16)]
    V.compare(proto.SerializeToString(), V.torch_logits(mq, batches), batches, 1e-4)


@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_block_opset21_types_and_numerics(exported, symmetric):
    m, tpl = exported
    mq = copy.deepcopy(m)
    qd = quantize_(mq, QuantConfig(bits=4, granularity="block", group_size=32, symmetric=symmetric))
    proto = int4_model(tpl.load(), tpl.refs, qd, mq.state_dict())
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 21
    want = TensorProto.INT4 if symmetric else TensorProto.UINT4
    codes = [i for i in proto.graph.initializer if i.name.endswith("__codes")]
    assert codes and all(i.data_type == want for i in codes)
    dqs = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert all(any(a.name == "block_size" and a.i == 32 for a in n.attribute) for n in dqs)
    by_param = {r.param: r for r in tpl.refs.values()}
    emb = by_param["roberta_prelayernorm.embeddings.word_embeddings.weight"].name
    assert f"{emb}__codes" in {i.name for i in codes}, "the embedding Gather must be INT4 too"
    ref = by_param["roberta_prelayernorm.encoder.layer.0.attention.self.query.weight"]
    arr = numpy_helper.to_array(next(i for i in codes if i.name == f"{ref.name}__codes")).astype(np.int16)
    q = qd["roberta_prelayernorm.encoder.layer.0.attention.self.query.weight"].codes.numpy()
    np.testing.assert_array_equal(arr, q.T if ref.transposed else q)
    batches = [_batch(3, 20)]
    ref = V.torch_logits(mq, batches)
    V.compare(proto.SerializeToString(), ref, batches, 1e-4)  # the stored function, exactly
    # ORT's default CPU session may run INT4 MatMul with int8 activations: close, not exact.
    d, _, _ = V.compare(proto.SerializeToString(), ref, batches, None, sess=V.session(proto.SerializeToString()))
    assert d < 0.05 * max(1.0, float(np.abs(ref[0]).max()))


def test_file_sizes_shrink_with_bits(exported, tmp_path):
    m, tpl = exported
    sizes = {}
    proto = tpl.load()
    rewrite_weights(proto, tpl.refs, {}, m.state_dict())
    sizes["fp32"] = save_model(proto, tmp_path / "a.onnx")
    q8 = quantize_(copy.deepcopy(m), QuantConfig(bits=8, granularity="per-channel", symmetric=True))
    proto = tpl.load()
    rewrite_weights(proto, tpl.refs, q8, m.state_dict(), container="int8")
    sizes["int8"] = save_model(proto, tmp_path / "b.onnx")
    m4, q4 = _block4(m, symmetric=True)
    sizes["int4"] = save_model(int4_model(tpl.load(), tpl.refs, q4, m4.state_dict()), tmp_path / "c.onnx")
    assert sizes["fp32"] > 3 * sizes["int8"] / 1.2 > sizes["int4"] * 1.5, sizes


def test_tensorrt_int4_file_is_accepted_and_runs_in_ort(exported):
    m, tpl = exported
    ref, q = _block4(m, symmetric=True, block=64)
    assert tensorrt_int4_ready(q)
    proto = int4_model(tpl.load(), tpl.refs, q, ref.state_dict(), fp16=True, matmul_only=True)
    assert check_tensorrt_onnx(proto, "int4") == []
    # The same weights with an asymmetric grid are refused (zero point / UINT4 are not TensorRT's form).
    ra, qa = _block4(m, symmetric=False, block=64)
    assert not tensorrt_int4_ready(qa) and not tensorrt_int4_ready(_block4(m, symmetric=True, block=32)[1])
    asym = int4_model(tpl.load(), tpl.refs, qa, ra.state_dict(), fp16=True, matmul_only=True)
    assert any(v.rule == "signed only" for v in check_tensorrt_onnx(asym, "int4"))
    batches = [_batch(4, 12)]
    V.compare(proto.SerializeToString(), V.torch_logits(ref, batches), batches, 5e-2)


@pytest.mark.parametrize("granularity", ["per-tensor", "per-channel"])
def test_int4_asymmetric_paper_grid_is_exact(exported, granularity):
    # The paper's grid (offset q0 = min W, not an integer zero point) in INT4: UINT4 codes, then Add(q0).
    m, tpl = exported
    mq = copy.deepcopy(m)
    qd = quantize_(mq, QuantConfig(bits=4, granularity=granularity))
    proto = int4_model(tpl.load(), tpl.refs, qd, mq.state_dict())
    onnx.checker.check_model(proto, full_check=True)
    codes = [i for i in proto.graph.initializer if i.name.endswith("__codes")]
    assert codes and all(i.data_type == TensorProto.UINT4 for i in codes)
    batches = [_batch(4, 16)]
    ref = V.torch_logits(mq, batches)
    for sess in (V.session(proto.SerializeToString(), exact=True), V.session(proto.SerializeToString())):
        got = V.onnx_logits(sess, batches)
        assert float(np.abs(got[0] - ref[0]).max()) <= 1e-4


def test_int8_dynamic_quantizes_the_embedding_too(tmp_path):
    # A vocabulary-heavy model, as real ones are (the embedding is most of a small model's weights).
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForSequenceClassification

    from tlc_export.export import ort_quant

    torch.manual_seed(0)
    cfg = RobertaPreLayerNormConfig(vocab_size=6000, hidden_size=96, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=192, max_position_embeddings=34, num_labels=2, type_vocab_size=1)
    m = RobertaPreLayerNormForSequenceClassification(cfg).eval()
    tpl = export_template(m, tmp_path / "graph.onnx")
    proto = tpl.load()
    rewrite_weights(proto, tpl.refs, {}, m.state_dict())
    fp32 = tmp_path / "fp32.onnx"
    save_model(proto, fp32)
    ort_quant.quantize_int8_dynamic(fp32, tmp_path / "dyn.onnx")
    ratio = (tmp_path / "dyn.onnx").stat().st_size / fp32.stat().st_size
    assert ratio <= 0.27, ratio
    q = onnx.load(str(tmp_path / "dyn.onnx"))
    big_float = [i.name for i in q.graph.initializer if i.data_type == TensorProto.FLOAT and np.prod(i.dims) >= 6000]
    assert big_float == [], "no fp32 table may be left"
    ids = np.random.default_rng(0).integers(5, 6000, (4, 16))
    batches = [V.Batch(ids, np.ones_like(ids), np.zeros(4, dtype=np.int64))]
    ref = V.torch_logits(m, batches)
    d, _, _ = V.compare(tmp_path / "dyn.onnx", ref, batches, None)
    assert d < 0.1 * max(1.0, float(np.abs(ref[0]).max()))  # INT8 weights + activations: close, not exact


def test_corrupted_initializer_raises_mismatch(exported, tmp_path):
    m, tpl = exported
    proto = tpl.load()
    rewrite_weights(proto, tpl.refs, {}, m.state_dict())
    name = next(r.name for r in tpl.refs.values() if r.param.endswith("layer.1.output.dense.weight"))
    init = next(i for i in proto.graph.initializer if i.name == name)
    arr = numpy_helper.to_array(init).copy()
    arr[:, 0] += 5.0
    init.CopyFrom(numpy_helper.from_array(arr, name))
    path = tmp_path / "bad.onnx"
    save_model(proto, path)
    batches = [_batch(2, 8)]
    with pytest.raises(ExportMismatchError) as ei:
        V.compare(path, V.torch_logits(m, batches), batches, 1e-3)
    (o,) = ei.value.outputs
    assert o.name == "logits" and o.max_abs_diff > o.tolerance and "logits" in str(ei.value)


def test_ort_quantizers_static_is_tensorrt_form(exported, tmp_path):
    from tlc_export.export import ort_quant

    m, tpl = exported
    proto = tpl.load()
    rewrite_weights(proto, tpl.refs, {}, m.state_dict())
    fp32 = tmp_path / "fp32.onnx"
    save_model(proto, fp32)
    ort_quant.quantize_int8_static(fp32, tmp_path / "s.onnx", [_batch(4, 16, seed=s) for s in range(4)])
    ort_quant.quantize_int4_matmulnbits(fp32, tmp_path / "n.onnx", 32)
    # ORT writes an fp32 graph around the Q/DQ pairs; TensorRT gets it converted to fp16.
    assert {v.rule for v in check_tensorrt_onnx(tmp_path / "s.onnx", "int8")} == {"fp16 graph for INT8"}
    from tlc_export.export.tensorrt import int8_fp16_qdq

    h = int8_fp16_qdq(tmp_path / "s.onnx", tmp_path / "h.onnx")
    assert check_tensorrt_onnx(h, "int8") == []
    assert any(v.rule == "ORT-only op" for v in check_tensorrt_onnx(tmp_path / "n.onnx", "int4"))
    batches = [_batch(4, 16, seed=9)]
    ref = V.torch_logits(m, batches)
    spread = float(np.abs(ref[0]).max())
    for f in ("s.onnx", "n.onnx", "h.onnx"):
        V.check(tmp_path / f)
        d, _, _ = V.compare(tmp_path / f, ref, batches, None)
        assert d < 0.25 * max(1.0, spread), (f, d)  # re-quantized, so close but not equal


def _bmm_inputs_quantized(path) -> int:
    """Attention's batched MatMuls (no weight input) whose inputs come through a DequantizeLinear."""
    import onnx

    g = onnx.load(str(path)).graph
    inits = {i.name for i in g.initializer}
    dq = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    weights = inits | {n.output[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    return sum(1 for n in g.node if n.op_type == "MatMul" and not any(x in weights for x in n.input)
               and any(x in dq for x in n.input))


def test_attention_matmuls_are_quantized_only_when_asked(exported, tmp_path):
    """Default: Q·Kᵀ and softmax·V stay float, every weight MatMul is INT8 and no bias is INT32 (fp16-normal
    scales for TensorRT); export.int8_attention_matmuls quantizes them too. Both files track PyTorch."""
    import onnx

    from tlc_export.export import ort_quant

    m, tpl = exported
    proto = tpl.load()
    rewrite_weights(proto, tpl.refs, {}, m.state_dict())
    fp32 = tmp_path / "fp32.onnx"
    save_model(proto, fp32)
    cal = [_batch(4, 16, seed=s) for s in range(4)]
    kept = ort_quant.quantize_int8_static(fp32, tmp_path / "d.onnx", cal)
    assert kept == ort_quant.activation_matmuls(onnx.load(str(fp32))) and len(kept) == 2 * m.config.num_hidden_layers
    assert ort_quant.quantize_int8_static(fp32, tmp_path / "a.onnx", cal, attention_matmuls=True) == []
    assert _bmm_inputs_quantized(tmp_path / "d.onnx") == 0
    assert _bmm_inputs_quantized(tmp_path / "a.onnx") == 2 * m.config.num_hidden_layers
    for f in ("d.onnx", "a.onnx"):
        g = onnx.load(str(tmp_path / f)).graph
        assert not [i.name for i in g.initializer if i.data_type == onnx.TensorProto.INT32], f  # no INT32 biases
    batches = [_batch(4, 16, seed=9)]
    ref = V.torch_logits(m, batches)
    spread = float(np.abs(ref[0]).max())
    for f in ("d.onnx", "a.onnx"):
        d, _, _ = V.compare(tmp_path / f, ref, batches, None)
        assert d < 0.25 * max(1.0, spread), (f, d)


# The documented tolerances (max |logit diff| / max(1, max |reference logit|)), pinned here as numbers: the
# validator must reject an error just above them and accept one just below.
PINNED_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}


@pytest.fixture(scope="module")
def fp32_file(exported, tmp_path_factory):
    m, tpl = exported
    proto = tpl.load()
    rewrite_weights(proto, tpl.refs, {}, m.state_dict())
    path = tmp_path_factory.mktemp("fp32") / "model.onnx"
    save_model(proto, path)
    return path


@pytest.mark.parametrize("fmt", ["fp32", "fp16"])
def test_format_tolerance_rejects_an_error_just_above_it(exported, fp32_file, fmt):
    """The reference is the file's own ORT logits plus one injected error; the format's tolerance (as the
    export stage reads it) rejects 1.02 × the pinned value and accepts 0.98 ×."""
    batches = [_batch(2, 8)]
    own = V.onnx_logits(V.session(fp32_file, exact=True), batches)
    scale = max(1.0, float(np.abs(own[0]).max()))
    i = np.unravel_index(np.abs(own[0]).argmin(), own[0].shape)  # shifting the smallest logit keeps the scale
    for factor, raises in ((1.02, True), (0.98, False)):
        ref = [own[0].copy()]
        ref[0][i] += factor * PINNED_TOLERANCE[fmt] * scale
        assert max(1.0, float(np.abs(ref[0]).max())) == scale
        if raises:
            with pytest.raises(ExportMismatchError):
                V.compare(fp32_file, ref, batches, V.TOLERANCE[fmt])
        else:
            d, tol, _ = V.compare(fp32_file, ref, batches, V.TOLERANCE[fmt])
            assert d < tol == pytest.approx(PINNED_TOLERANCE[fmt] * scale)


def test_non_finite_logits_are_a_mismatch(exported, fp32_file):
    batches = [_batch(2, 8)]
    ref = [x.copy() for x in V.torch_logits(exported[0], batches)]
    ref[0][0, 0] = np.nan
    with pytest.raises(ExportMismatchError):
        V.compare(fp32_file, ref, batches, V.TOLERANCE["fp32"])
