"""Own codes on integer kernels (`tlc_export.export.integer`): each reference is built with numpy and plain
onnx/onnxruntime (the paper's formula, DequantizeLinear + Add graphs written here), not with the exporter."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tlc_export.compress.quantize import QuantConfig, QuantizedTensor, quantize_
from tlc_export.errors import ExportMismatchError
from tlc_export.export import validate as V
from tlc_export.export.integer import _FEATURE_CODE, integer_model, to_integer_kernels_
from tlc_export.export.onnx_export import InitializerRef, export_template, save_model

K, N = 64, 48


def _paper_codes(w: np.ndarray, bits: int) -> tuple[np.ndarray, float, float]:
    """The paper's per-tensor asymmetric grid in numpy: codes, Δ, q0 (independent of the compress stage)."""
    q0, qmax = float(w.min()), float(w.max())
    d = (qmax - q0) / (2**bits - 1)
    return np.round((w - q0) / d).astype(np.int64), d, q0


def _qt(codes_torch_layout: np.ndarray, d: float, q0: float, bits: int) -> QuantizedTensor:
    return QuantizedTensor(torch.from_numpy(codes_torch_layout.astype(np.uint8)), torch.tensor(d, dtype=torch.float32),
                           torch.tensor(q0, dtype=torch.float32), bits, "per-tensor", 32, False)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _matmul_graph(w_onnx: np.ndarray) -> onnx.ModelProto:
    """X [B, S, K] · W [K, N] with W an fp32 initializer (what the exporter writes for a Linear)."""
    g = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "g",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w_onnx.astype(np.float32), "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    return m


def _dq_add_reference(codes_onnx: np.ndarray, d: float, q0: float) -> onnx.ModelProto:
    """The DequantizeLinear + Add(q0) + MatMul graph of the paper's codes, written by hand."""
    nodes = [helper.make_node("DequantizeLinear", ["C", "S"], ["Wd"]),
             helper.make_node("Add", ["Wd", "Q0"], ["W"]),
             helper.make_node("MatMul", ["X", "W"], ["Y"])]
    inits = [numpy_helper.from_array(codes_onnx.astype(np.uint8), "C"), numpy_helper.from_array(np.float32(d), "S"),
             numpy_helper.from_array(np.float32(q0), "Q0")]
    g = helper.make_graph(nodes, "ref", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    return m


def _grid_x(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Activations that DynamicQuantizeLinear represents exactly: (i − 128)/64 for i in 0..255, both ends
    present, so its scale is 1/64 and its zero point 128 and the integer GEMM is exact."""
    x = (rng.integers(0, 256, size=shape) - 128) / 64.0
    x.reshape(-1)[0], x.reshape(-1)[1] = -128 / 64.0, 127 / 64.0
    return x.astype(np.float32)


def _integer_matmul(codes: np.ndarray, d: float, q0: float, bits: int, **kw) -> tuple[onnx.ModelProto, object]:
    m = _matmul_graph(d * codes + q0)  # ONNX layout [K, N] = torch weight transposed
    refs = {"W": InitializerRef("W", "lin.weight", True)}
    rep = to_integer_kernels_(m, refs, {"lin.weight": _qt(codes.T, d, q0, bits)}, **kw)
    return m, rep


@pytest.mark.parametrize("bits", [8, 6])
def test_rank1_correction_equals_dq_add_graph(bits):
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(K, N)) * 0.05 + 0.01).astype(np.float32)  # q0 = min W is not a multiple of Δ
    codes, d, q0 = _paper_codes(w, bits)
    assert abs(q0 / d - round(q0 / d)) > 1e-3  # the offset the correction exists for
    model, rep = _integer_matmul(codes, d, q0, bits)
    ops = [n.op_type for n in model.graph.node]
    assert "DynamicQuantizeMatMul" in ops and "DequantizeLinear" not in ops and rep.corrections == 1
    ref_model = _dq_add_reference(codes, d, q0)

    x = _grid_x(rng, (2, 5, K))  # X exactly representable: the algebra, plus rounding the one feature
    ref = _run(ref_model, {"X": x})
    got = _run(model, {"X": x})
    # the feature c·rowsum(X)/(Δ·m) is quantized with X (scale 1/64) and weighted Δ·m: ≤ Δ·m/128 per output
    np.testing.assert_allclose(got, ref, atol=2e-5 * np.abs(ref).max() + d * _FEATURE_CODE / 128, rtol=0)

    x = rng.normal(size=(2, 5, K)).astype(np.float32)  # general activations: dynamic quantization error only
    ref = _run(ref_model, {"X": x})
    got = _run(model, {"X": x})
    sqnr = 10 * np.log10((ref**2).sum() / ((got - ref) ** 2).sum())
    assert sqnr > 30, sqnr

    # without the rank-1 term the result is off by c·rowsum(X): the test above would see it
    corr = next(i for i in model.graph.initializer if i.name.endswith("__features_row"))
    corr.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(corr)), corr.name))
    x = _grid_x(rng, (2, 5, K))
    off = _run(model, {"X": x}) - _run(ref_model, {"X": x})
    assert np.abs(off).max() > 10 * (2e-5 * np.abs(_run(ref_model, {"X": x})).max() + d * _FEATURE_CODE / 128)


def test_float_zero_points_reproduce_the_codes():
    """MatMulNBits with float zero points −q0/Δ: feeding the identity returns Δ·codes + q0, whose codes
    (recovered with the paper's formula) are exactly the stored ones."""
    rng = np.random.default_rng(1)
    w = (rng.normal(size=(K, N)) * 0.05 - 0.003).astype(np.float32)
    codes, d, q0 = _paper_codes(w, 4)
    model, rep = _integer_matmul(codes, d, q0, 4, four_bit=True, int4_kernel="matmulnbits-acc0")
    nb = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nb) == 1 and rep.matmul_nbits == ["W"]
    zp = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == nb[0].input[3]))
    assert zp.dtype == np.float32 and np.allclose(zp, -q0 / d, rtol=1e-6)
    eye = np.eye(K, dtype=np.float32)[None]
    w_ort = _run(model, {"X": eye})[0]  # [K, N]: the weight ORT computes with
    np.testing.assert_array_equal(np.round((w_ort - q0) / d).astype(np.int64), codes)
    np.testing.assert_allclose(w_ort, d * codes + q0, atol=1e-6)


def _tiny_classifier(hidden: int = 64, vocab: int = 300) -> torch.nn.Module:
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForSequenceClassification

    torch.manual_seed(0)
    cfg = RobertaPreLayerNormConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=2 * hidden, max_position_embeddings=40, num_labels=3,
                                    type_vocab_size=1)
    m = RobertaPreLayerNormForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    m = _tiny_classifier()
    tpl = export_template(m, tmp_path_factory.mktemp("int") / "graph.onnx")
    return m, tpl


def _batches(vocab: int = 300) -> list[V.Batch]:
    g = np.random.default_rng(2)
    ids = g.integers(3, vocab, size=(4, 24))
    mask = np.ones_like(ids)
    mask[1, 15:] = 0
    mask[3, 4:] = 0
    return [V.Batch(ids.astype(np.int64), mask.astype(np.int64), np.zeros(4, np.int64))]


def _own_file(classifier, bits: int = 8, integer_zero_point: bool = False, **kw):
    """(fake-quant model, its codes, the integer file, report, graph optimization) on the paper's grid (or the
    one with integer zero points)."""
    m, tpl = classifier
    mq = copy.deepcopy(m)
    q = quantize_(mq, QuantConfig(bits=bits, integer_zero_point=integer_zero_point))
    model, rep, opt = integer_model(tpl.load(), tpl.refs, q, mq.state_dict(), 2, 64, four_bit=bits == 4, **kw)
    return mq, q, model, rep, opt


def _assert_computes_fake_quant(model: onnx.ModelProto, mq, path, exact: bool = False):
    """Save `model` to `path` and check its logits against the fake-quant torch model's within the export
    stage's tolerance (`int8-act`, relative; `fp32` when `exact`); returns (batches, reference logits)."""
    save_model(model, path)
    batches = _batches()
    ref = V.torch_logits(mq, batches)
    d, tol, _ = V.compare(path, ref, batches, V.TOLERANCE["fp32" if exact else "int8-act"], relative=not exact)
    assert d <= tol
    return batches, ref


@pytest.mark.parametrize("bits,kernel", [(8, None), (4, "matmulnbits-acc0"), (4, "int8-at-load")])
def test_embeddings_quantized_and_file_computes_the_variant(classifier, tmp_path, bits, kernel):
    mq, q, model, rep, opt = _own_file(classifier, bits, int4_kernel=kernel or "matmulnbits-acc0")
    table = "roberta_prelayernorm.embeddings.word_embeddings.weight"
    # the table is stored as codes (one uint8 per code, or two 4-bit codes per byte), never as fp32
    inits = {i.name: i for i in model.graph.initializer}
    assert not any(i.data_type == TensorProto.FLOAT and tuple(i.dims) == (300, 64) for i in inits.values())
    qt = q[table if table in q else "model." + table]
    if bits == 8:  # one scale: Gather on the codes, then DequantizeLinear (ORT's own INT8 form)
        (look,) = [n for n in model.graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"]
        (dq,) = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == look.output[0]]
        codes = numpy_helper.to_array(inits[look.input[0]])
        scale, zp = (numpy_helper.to_array(inits[dq.input[i]]) for i in (1, 2))
        assert codes.dtype == np.uint8 and codes.shape == (300, 64) and scale.shape == () and zp.dtype == np.uint8
        np.testing.assert_array_equal(codes, qt.codes.numpy())
        # Δ·(codes − z) is the variant's table up to one constant (the paper's q0 is off the integer grid by
        # at most Δ/2), which the embedding LayerNorm subtracts
        shift = (scale * (codes.astype(np.float64) - zp.astype(np.float64))) - qt.dequantize().double().numpy()
        assert np.ptp(shift) <= 1e-6 and abs(shift.flat[0]) <= float(qt.scale) / 2 + 1e-9
        assert not [n for n in model.graph.node if n.op_type == "GatherBlockQuantized" and n.input[1] == "input_ids"]
    else:
        gbq = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
        assert gbq and any(n.input[1] == "input_ids" for n in gbq)
        codes = numpy_helper.to_array(inits[gbq[0].input[0]])
        assert codes.dtype == np.uint8 and codes.shape == (300, 32)
        lo, hi = codes & 15, codes >> 4  # unpacked nibbles are the compress stage's codes
        np.testing.assert_array_equal(np.stack([lo, hi], -1).reshape(300, 64), qt.codes.numpy())
    assert not rep.fallback
    # the tables' offsets (q0) shift every looked-up row by a constant the embedding LayerNorm subtracts
    tables = rep.gather_dequantized if bits == 8 else rep.gather_quantized
    assert len(tables) == 3 and not (rep.gather_quantized if bits == 8 else rep.gather_dequantized)
    assert set(tables) <= set(rep.corrections_dropped)
    assert not [n for n in model.graph.node if n.name.endswith("__offset")]
    assert len(rep.qattention) == (0 if bits == 4 and kernel.startswith("matmulnbits") else 6)
    _assert_computes_fake_quant(model, mq, tmp_path / "own.onnx", exact=bits == 4 and kernel.startswith("matmulnbits"))
    assert opt["attention_fused"] == 2


def test_corrupted_scale_raises_typed_mismatch(classifier, tmp_path):
    mq, _, model, _, _ = _own_file(classifier)
    batches, ref = _assert_computes_fake_quant(model, mq, tmp_path / "good.onnx")
    bad = copy.deepcopy(model)
    first = next(n for n in bad.graph.node if n.op_type == "QAttention")  # layer 0's Q/K/V
    scale = next(i for i in bad.graph.initializer if i.name == first.input[4])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 3.0, scale.name))
    path = tmp_path / "bad.onnx"
    save_model(bad, path)
    with pytest.raises(ExportMismatchError) as e:
        V.compare(path, ref, batches, V.TOLERANCE["int8-act"], relative=True)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("integer_zero_point", [False, True])
def test_masked_asymmetric_weights(classifier, integer_zero_point):
    """A pruned position of the paper's grid has no code: that weight keeps DequantizeLinear (and says why). On
    the integer-zero-point grid its zero code is exactly 0, so it runs on the integer kernel like the others."""
    m, tpl = classifier
    mq = copy.deepcopy(m)
    q = quantize_(mq, QuantConfig(bits=8, integer_zero_point=integer_zero_point))
    name = next(n for n in q if n.endswith("intermediate.dense.weight"))
    mask = torch.rand(q[name].shape, generator=torch.Generator().manual_seed(0)) > 0.5
    q[name].set_mask_(mask)
    with torch.no_grad():
        dict(mq.named_parameters())[name].copy_(q[name].dequantize())
    model, rep, _ = integer_model(tpl.load(), tpl.refs, q, mq.state_dict(), 2, 64)
    if integer_zero_point:
        assert not rep.fallback and rep.corrections == 0
        # no weight is dequantized per call (the tables' DequantizeLinear reads only the rows looked up)
        assert not [n for n in model.graph.node if n.op_type == "DequantizeLinear" and not n.input[0].endswith("__gathered")]
    else:
        assert any("pruning mask" in why for why in rep.fallback.values())
    batches = _batches()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, batches[0].feeds())[0]
    ref = V.torch_logits(mq, batches)[0]
    assert np.abs(got - ref).max() <= V.TOLERANCE["int8-act"] * np.abs(ref).max()


def _residual_ln_graph(w_onnx: np.ndarray, with_ln: bool, bias: bool = False) -> onnx.ModelProto:
    """Y = MatMul(X, W) (+ a bias vector) + R (a residual sum), then LayerNormalization over the last axis
    (or the sum itself out)."""
    nodes = [helper.make_node("MatMul", ["X", "W"], ["Y"])]
    inits = [numpy_helper.from_array(w_onnx.astype(np.float32), "W")]
    if bias:  # as the fused CPU graph has it: the bias Add, then the residual Add
        nodes.append(helper.make_node("Add", ["Y", "Bias"], ["YB"]))
        inits.append(numpy_helper.from_array(np.linspace(-0.3, 0.3, N).astype(np.float32), "Bias"))
    nodes.append(helper.make_node("Add", ["YB" if bias else "Y", "R"], ["S"]))
    if with_ln:
        nodes.append(helper.make_node("LayerNormalization", ["S", "G", "B"], ["O"], axis=-1, epsilon=1e-5))
        inits += [numpy_helper.from_array(np.linspace(0.5, 1.5, N).astype(np.float32), "G"),
                  numpy_helper.from_array(np.linspace(-0.1, 0.1, N).astype(np.float32), "B")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, K]),
                                       helper.make_tensor_value_info("R", TensorProto.FLOAT, [None, None, N])],
                          [helper.make_tensor_value_info("O" if with_ln else "S", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize(("with_ln", "bias"), [(True, False), (False, False), (True, True), (False, True)])
def test_correction_left_out_only_where_layernorm_removes_it(with_ln, bias):
    """A per-row constant is invisible after a LayerNorm over the row (a bias Add on the way keeps it a per-row
    constant): there the correction is left out and the result still equals the DQ + Add graph's; where the sum
    leaves the graph unnormalized it is kept."""
    rng = np.random.default_rng(4)
    w = (rng.normal(size=(K, N)) * 0.05 + 0.02).astype(np.float32)
    codes, d, q0 = _paper_codes(w, 8)
    model = _residual_ln_graph(d * codes + q0, with_ln, bias)
    rep = to_integer_kernels_(model, {"W": InitializerRef("W", "lin.weight", True)}, {"lin.weight": _qt(codes.T, d, q0, 8)})
    assert rep.corrections_dropped == (["W"] if with_ln else []) and rep.corrections == (0 if with_ln else 1)
    gemm = next(n for n in model.graph.node if n.op_type == "DynamicQuantizeMatMul")
    # a constant bias Add after the GEMM is taken into it (its fifth input), as ORT's quantizer does
    assert list(gemm.input[4:]) == (["Bias"] if bias else [])
    assert [n.op_type for n in model.graph.node].count("Add") == 1
    ref = _residual_ln_graph(d * codes + q0, with_ln, bias)  # fp32 weights Δ·codes + q0, plain ONNX
    feeds = {"X": _grid_x(rng, (2, 5, K)), "R": rng.normal(size=(2, 5, N)).astype(np.float32)}
    want = _run(ref, feeds)
    rounding = 0 if with_ln else d * _FEATURE_CODE / 128  # the rank-1 feature, quantized with X (first test)
    np.testing.assert_allclose(_run(model, feeds), want, atol=1e-4 * np.abs(want).max() + rounding, rtol=0)


def _qattention_parts(model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    """Per QAttention: its int8 weight, per-column scale / zero point, and the [K, P] feature matrix (numpy)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    w = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type != "QAttention":
            continue
        quant = producer[n.input[0]]
        assert quant.op_type == "DynamicQuantizeLinear"
        cat = producer[quant.input[0]]
        assert cat.op_type == "Concat"  # [X, features]
        gemv = producer[cat.input[1]]
        expand = producer[gemv.input[1]]
        assert gemv.op_type == "MatMul" and gemv.input[0] == cat.input[0] and expand.op_type == "Expand"
        feats = np.broadcast_to(w[expand.input[0]], tuple(w[expand.input[1]]))
        cols = w[n.input[1]].shape[1]
        out.append({"weight": w[n.input[1]].astype(np.int64), "scale": np.broadcast_to(w[n.input[4]], (cols,)),
                    "zp": np.broadcast_to(w[n.input[7]], (cols,)).astype(np.int64), "features": feats,
                    "bias": w[n.input[2]], "x": cat.input[0]})
    return out


def test_attention_runs_in_qattention_with_the_rank1_terms_as_feature_rows(classifier, tmp_path):
    """Packed Q/K/V + MultiHeadAttention becomes one QAttention (integer GEMM and attention in one kernel, as in
    onnx-int8-dynamic) on X widened by one feature per projection; the extra weight rows make the integer GEMM
    equal X·(Δ·codes + q0) (checked in numpy against the compress stage's codes), and the file computes the
    fake-quant model."""
    mq, q, model, rep, _ = _own_file(classifier)
    assert not [n for n in model.graph.node if n.op_type in ("MultiHeadAttention", "Split")]
    assert len(rep.qattention) == 2 * 3 and not rep.integer_matmul and not rep.fallback
    parts = _qattention_parts(model)
    assert len(parts) == 2
    rng = np.random.default_rng(5)
    for layer, a in enumerate(parts):
        k = a["features"].shape[0]
        # one extra row per projection's feature, then zero-valued rows up to a multiple of 4
        assert a["weight"].shape == (k + 4, 3 * k) and np.count_nonzero(a["features"][0]) == 3
        np.testing.assert_array_equal(a["weight"][k + 3], a["zp"])
        names = [f"roberta_prelayernorm.encoder.layer.{layer}.attention.self.{p}.weight" for p in ("query", "key", "value")]
        qs = [q[n if n in q else "model." + n] for n in names]
        w_variant = np.concatenate([(t.scale.item() * t.codes.numpy().astype(np.float64) + t.offset.item()).T for t in qs], 1)
        np.testing.assert_array_equal(a["weight"][:k], np.concatenate([t.codes.numpy().T for t in qs], 1).astype(np.int64) - 128)
        x = rng.normal(size=(6, k))
        widened = np.concatenate([x, x @ a["features"]], 1)
        got = widened @ (a["scale"] * (a["weight"] - a["zp"]))
        np.testing.assert_allclose(got, x @ w_variant, atol=1e-5 * np.abs(x @ w_variant).max(), rtol=0)
        bare = x @ (a["scale"] * (a["weight"][:k] - a["zp"]))  # without the extra rows: off by c·rowsum(X)
        assert np.abs(bare - x @ w_variant).max() > 100 * np.abs(got - x @ w_variant).max()
    _assert_computes_fake_quant(model, mq, tmp_path / "own.onnx")


def test_integer_zero_point_grid_needs_no_rank1_features(classifier, tmp_path):
    """compress.quantize.zero_point: integer — each weight is Δ·(W_I − z) with an integer z, so QAttention and
    DynamicQuantizeMatMul take the codes with no extra feature (no GEMV, no Concat, K not widened), the stored
    weights are the compress stage's codes, and the file still computes the fake-quant model."""
    mq, q, model, rep, _ = _own_file(classifier, integer_zero_point=True)
    assert rep.corrections == 0 and not rep.fallback and len(rep.qattention) == 2 * 3
    assert not [n for n in model.graph.node if n.op_type in ("MatMul", "ReduceSum", "MultiHeadAttention")]
    normed = {n.output[0] for n in model.graph.node if n.op_type == "LayerNormalization"}
    assert not [n for n in model.graph.node if n.op_type == "Concat" and normed & set(n.input)]  # X never widened
    producer = {o: n for n in model.graph.node for o in n.output}
    w = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qattn = [n for n in model.graph.node if n.op_type == "QAttention"]
    assert len(qattn) == 2
    for layer, n in enumerate(qattn):
        assert producer[producer[n.input[0]].input[0]].op_type == "LayerNormalization"  # X itself, not widened
        names = [f"roberta_prelayernorm.encoder.layer.{layer}.attention.self.{p}.weight" for p in ("query", "key", "value")]
        qs = [q[k if k in q else "model." + k] for k in names]
        k = qs[0].shape[1]
        weight = w[n.input[1]].astype(np.int64)
        assert weight.shape == (k, 3 * k)
        np.testing.assert_array_equal(weight, np.concatenate([t.codes.numpy().T for t in qs], 1).astype(np.int64) - 128)
        scale = np.broadcast_to(w[n.input[4]], (3 * k,)).astype(np.float64)
        zp = np.broadcast_to(w[n.input[7]], (3 * k,)).astype(np.int64)
        w_variant = np.concatenate([(t.scale.item() * t.codes.numpy().astype(np.float64) + t.offset.item()).T for t in qs], 1)
        np.testing.assert_allclose(scale * (weight - zp), w_variant, rtol=0, atol=1e-6 * np.abs(w_variant).max())
    for n in (n for n in model.graph.node if n.op_type == "DynamicQuantizeMatMul"):
        assert w[n.input[1]].shape[0] in (mq.config.hidden_size, mq.config.intermediate_size)  # no feature rows
    # the tables too: Δ·(codes − z) is the variant's table itself, nothing left for a LayerNorm to remove
    assert len(rep.gather_dequantized) == 3 and not set(rep.gather_dequantized) & set(rep.corrections_dropped)
    looks = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0].endswith("__codes")]
    assert len(looks) == 3
    for look in looks:
        (dq,) = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == look.output[0]]
        name = look.input[0][: -len("__codes")]
        t = q[next(k for k in q if k.endswith(name.split("model.", 1)[-1]))]
        table = w[dq.input[1]] * (w[look.input[0]].astype(np.float64) - w[dq.input[2]].astype(np.float64))
        want = t.dequantize().double().numpy()
        np.testing.assert_allclose(table, want, rtol=0, atol=1e-6 * np.abs(want).max())  # float32 rounding only
    _assert_computes_fake_quant(model, mq, tmp_path / "own.onnx")


def test_classifier_head_keeps_codes_and_runs_fp32_rebuilt_at_load(classifier, tmp_path):
    """The head's Gemms (one row per example) store the compress stage's codes; constant nodes rebuild
    Δ·codes + q0, which ONNX Runtime folds when it loads the file (no per-call dequantization left)."""
    _, q, model, rep, _ = _own_file(classifier)
    heads = [n for n in rep.at_load]
    assert len(heads) == 2 and all("classifier" in n for n in heads)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for w in heads:
        src = next(k for k in q if k.endswith(w.split("model.", 1)[-1]))
        np.testing.assert_array_equal(inits[f"{w}__codes"], q[src].codes.numpy())
        assert inits[f"{w}__codes"].dtype == np.uint8
    assert not any(i.dtype == np.float32 and i.ndim == 2 and i.shape[1] == 64 and i.shape[0] in (64, 3) for i in inits.values())
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    loaded = onnx.load(str(tmp_path / "loaded.onnx"))
    gemms = [n for n in loaded.graph.node if n.op_type in ("Gemm", "FusedGemm")]
    assert len(gemms) == 2 and not [n for n in loaded.graph.node if n.op_type == "Cast" and "__codes" in n.input[0]]
    folded = {i.name: numpy_helper.to_array(i) for i in loaded.graph.initializer}
    for w in heads:
        src = next(k for k in q if k.endswith(w.split("model.", 1)[-1]))
        t = q[src]
        want = t.scale.item() * t.codes.numpy().astype(np.float64) + t.offset.item()
        got = next(folded[n.input[1]] for n in gemms if n.input[1] in folded and folded[n.input[1]].shape == want.shape)
        np.testing.assert_allclose(got, want, atol=1e-6 * np.abs(want).max(), rtol=0)


def test_correction_kept_where_layernorm_also_returns_its_mean():
    """A LayerNormalization whose Mean output is read sees a per-row constant: the correction stays."""
    rng = np.random.default_rng(5)
    w = (rng.normal(size=(K, N)) * 0.05 + 0.02).astype(np.float32)
    codes, d, q0 = _paper_codes(w, 8)

    def with_mean() -> onnx.ModelProto:
        m = _residual_ln_graph(d * codes + q0, True)
        m.graph.node[-1].output.append("Mean")
        m.graph.output.append(helper.make_tensor_value_info("Mean", TensorProto.FLOAT, None))
        return m

    model = with_mean()
    rep = to_integer_kernels_(model, {"W": InitializerRef("W", "lin.weight", True)}, {"lin.weight": _qt(codes.T, d, q0, 8)})
    assert rep.corrections_dropped == [] and rep.corrections == 1
    feeds = {"X": _grid_x(rng, (2, 5, K)), "R": rng.normal(size=(2, 5, N)).astype(np.float32)}
    sess_ref, sess = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                      for m in (with_mean(), model))
    want, got = sess_ref.run(["Mean"], feeds)[0], sess.run(["Mean"], feeds)[0]
    # X on the grid (scale 1/64); the rank-1 feature rounds by ≤ Δ·m/128 (see the first test)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max() + d * _FEATURE_CODE / 128, rtol=0)


def test_block_table_with_a_shorter_last_block_runs_on_gather_block_quantized(tmp_path):
    """The TensorRT INT4 grid (symmetric blocks of 64) on a width that 64 does not divide (80 = 64 + 16): the
    tables stay 4-bit on GatherBlockQuantized at block 16, each block's scale repeated over its sub-blocks, and
    the looked-up rows are the compress stage's values (plain onnxruntime against the artifact's dequantize)."""
    from tlc_export.config.compress import QuantizeConfig

    m = _tiny_classifier(hidden=80)
    tpl = export_template(m, tmp_path / "graph.onnx")
    mq = copy.deepcopy(m)
    q = quantize_(mq, QuantConfig.tensorrt_int4(QuantizeConfig(), 64))
    model, rep, _ = integer_model(tpl.load(), tpl.refs, q, mq.state_dict(), 2, 80, four_bit=True)
    tables = [w for w in rep.gather_quantized if "embeddings" in w]
    assert len(tables) == 3 and not [w for w in rep.fallback if "embeddings" in w], rep.fallback
    word = "roberta_prelayernorm.embeddings.word_embeddings.weight"
    qt = q[word if word in q else "model." + word]
    assert qt.scale.shape[-1] == 2  # the quantizer's blocks: 64, then 16
    (gbq,) = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized" and n.input[1] == "input_ids"]
    assert next(a.i for a in gbq.attribute if a.name == "block_size") == 16
    # the table node alone, in plain onnxruntime: every row id's output equals the fake-quant table
    inits = [i for i in model.graph.initializer if i.name in gbq.input]
    g = onnx.helper.make_graph([gbq], "t", [onnx.helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None])],
                               [onnx.helper.make_tensor_value_info(gbq.output[0], TensorProto.FLOAT, None)], inits)
    t = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 21), onnx.helper.make_opsetid("com.microsoft", 1)])
    ids = np.arange(300, dtype=np.int64)
    got = ort.InferenceSession(t.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]
    np.testing.assert_allclose(got, qt.dequantize().numpy(), rtol=0, atol=1e-6)
    _assert_computes_fake_quant(model, mq, tmp_path / "own.onnx", exact=True)  # the whole file: the variant
