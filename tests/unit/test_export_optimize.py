"""The fused CPU graph (`tlc_export.export.optimize`) and the CPU sessions that load it
(`tlc_export.export.session`): residual sums stay Add + LayerNormalization, in the file and after ONNX
Runtime loads it. References: plain `transformers` logits, a plain onnxruntime session, numpy."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tlc_export.export.onnx_export import export_onnx
from tlc_export.export.optimize import optimize_for_cpu

HIDDEN, HEADS, LAYERS, VOCAB = 64, 2, 2, 300


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForSequenceClassification

    torch.manual_seed(0)
    cfg = RobertaPreLayerNormConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                    num_attention_heads=HEADS, intermediate_size=2 * HIDDEN, max_position_embeddings=40,
                                    num_labels=3, type_vocab_size=1)
    model = RobertaPreLayerNormForSequenceClassification(cfg).eval()
    with torch.no_grad():  # trained-looking: non-zero biases, LayerNorm weights ≠ 1
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("optimize")
    export_onnx(model, folder / "raw.onnx")
    info = optimize_for_cpu(folder / "raw.onnx", folder / "fused.onnx", HEADS, HIDDEN)
    return model, folder / "raw.onnx", folder / "fused.onnx", info


def test_fused_graph_keeps_add_and_layernorm_and_matches_transformers(fused):
    """The other fusions happen, SkipLayerNormalization does not: every LayerNormalization of the exported
    graph is still one (embeddings, two per layer, the final one), and the logits are transformers'."""
    from tlc_export.export.session import session

    model, raw, path, info = fused
    ops, raw_ops = _ops(path), _ops(raw)
    assert ops["Attention"] == LAYERS and ops["BiasGelu"] == LAYERS and ops["Softmax"] == 0
    assert ops["SkipLayerNormalization"] == 0 and ops["SkipSimplifiedLayerNormalization"] == 0
    assert ops["LayerNormalization"] == raw_ops["LayerNormalization"] == 2 * LAYERS + 2
    assert info.applied and info.fusions["Attention"] == LAYERS and "SkipLayerNormalization" not in info.fusions

    g = np.random.default_rng(3)
    ids = g.integers(3, VOCAB, size=(3, 20)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 12:] = 0
    mask[2, 5:] = 0
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    got = session(path).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def _add_layernorm(path: Path) -> None:
    """y = LayerNorm(x + r): the sum has one reader, the pattern ORT fuses into SkipLayerNormalization at load."""
    h = 8
    nodes = [helper.make_node("Add", ["x", "r"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
    inits = [numpy_helper.from_array(np.linspace(0.5, 1.5, h).astype(np.float32), "gamma"),
             numpy_helper.from_array(np.linspace(-0.2, 0.2, h).astype(np.float32), "beta")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, h]) for n in "xr"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, h])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(path))


def _open(kind: str, path: Path, opts_factory):
    from tlc_export.export.session import cpu_session, session

    if kind == "cpu_session":
        return cpu_session(path, opts_factory())
    if kind == "export.session":
        return session(path, threads=1)
    if kind == "serving.predictor":
        from tlc_export.serving.predictor import session as predictor_session

        return predictor_session(str(path), threads=1)
    if kind == "own_codes_speed":
        from runtime_bench.own_codes_speed import _session

        return _session(path, 1)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["cpu_session", "export.session", "serving.predictor", "own_codes_speed"])
def test_our_cpu_sessions_do_not_fuse_skip_layernorm_at_load(kind, tmp_path, monkeypatch):
    """ORT's optimized-model dump: a plain session turns Add + LayerNormalization into SkipLayerNormalization,
    ours keep the two ops, and compute LayerNorm(x + r) (numpy)."""
    path = tmp_path / "add_ln.onnx"
    _add_layernorm(path)
    plain = ort.SessionOptions()
    plain.optimized_model_filepath = str(tmp_path / "plain.onnx")
    ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"])
    assert _ops(tmp_path / "plain.onnx") == Counter({"SkipLayerNormalization": 1})  # what ours must not do

    real = ort.SessionOptions
    dump = tmp_path / "ours.onnx"

    def dumping_options():
        opts = real()
        opts.optimized_model_filepath = str(dump)
        return opts

    monkeypatch.setattr(ort, "SessionOptions", dumping_options)  # the helpers build their options through this
    sess = _open(kind, path, dumping_options)
    assert _ops(dump) == Counter({"Add": 1, "LayerNormalization": 1})

    g = np.random.default_rng(0)
    x, r = (g.normal(size=(2, 3, 8)).astype(np.float32) for _ in range(2))
    s = (x + r).astype(np.float64)
    want = (s - s.mean(-1, keepdims=True)) / np.sqrt(s.var(-1, keepdims=True) + 1e-5)
    want = want * np.linspace(0.5, 1.5, 8) + np.linspace(-0.2, 0.2, 8)
    np.testing.assert_allclose(sess.run(None, {"x": x, "r": r})[0], want, rtol=0, atol=1e-5)
