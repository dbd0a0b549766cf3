"""TensorRT structural rules on hand-made Q/DQ graphs (TensorRT itself cannot run here)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tlc_export.errors import BackendUnavailable
from tlc_export.export.trt_rules import check_tensorrt_onnx


def _int4_matmul(codes_dtype=ml_dtypes.int4, zero_point=None, fdtype=np.float16, consumer="MatMul", opset=21,
                 scale=0.01, block_axis=0):
    k, n, bs = 64, 16, 32 if block_axis == 0 else 8
    w = np.random.default_rng(0).integers(-7, 8, size=(k, n))
    if codes_dtype == ml_dtypes.uint4:
        w = w + 8
    scale_shape = (k // bs, n) if block_axis == 0 else (k, n // bs)
    inits = [numpy_helper.from_array(w.astype(codes_dtype), "w_codes"),
             numpy_helper.from_array(np.full(scale_shape, scale, fdtype), "w_scale")]
    dq_in = ["w_codes", "w_scale"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(np.full(scale_shape, zero_point).astype(codes_dtype), "w_zp"))
        dq_in.append("w_zp")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(fdtype))
    nodes = [helper.make_node("DequantizeLinear", dq_in, ["w"], axis=block_axis, block_size=bs)]
    if consumer == "MatMul":
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["y"]))
    else:
        nodes.append(helper.make_node("Gather", ["w", "idx"], ["y"], axis=0))
    inputs = [helper.make_tensor_value_info("x", elem, ["b", k])]
    if consumer != "MatMul":
        inputs = [helper.make_tensor_value_info("idx", TensorProto.INT64, ["b"])]
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", elem, ["b", n])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def test_symmetric_int4_fp16_weight_only_is_accepted():
    assert check_tensorrt_onnx(_int4_matmul(), "int4") == []


def test_int4_blocks_must_run_along_k():
    # MatMul weight [K, N]: blocks along axis 1 (N) put several scales into one output's dot product.
    violations = check_tensorrt_onnx(_int4_matmul(block_axis=1), "int4")
    assert [v.rule for v in violations] == ["INT4 blocks along K"]
    assert "K is axis 0" in violations[0].detail


@pytest.mark.parametrize("trans_b, block_axis, ok", [(1, 1, True), (1, 0, False), (0, 0, True), (0, 1, False)])
def test_int4_gemm_k_axis_follows_trans_b(trans_b, block_axis, ok):
    k, n, bs = 64, 32, 16
    shape = (n, k) if trans_b else (k, n)
    scale_shape = tuple(d // bs if a == block_axis else d for a, d in enumerate(shape))
    inits = [numpy_helper.from_array(np.ones(shape).astype(ml_dtypes.int4), "w_codes"),
             numpy_helper.from_array(np.full(scale_shape, 0.01, np.float16), "w_scale")]
    nodes = [helper.make_node("DequantizeLinear", ["w_codes", "w_scale"], ["w"], axis=block_axis, block_size=bs),
             helper.make_node("Gemm", ["x", "w"], ["y"], transB=trans_b)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["b", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["b", n])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(m)
    rules = [v.rule for v in check_tensorrt_onnx(m, "int4")]
    assert rules == ([] if ok else ["INT4 blocks along K"])


@pytest.mark.parametrize("scale, ok", [(1e-5, False), (6.0e-5, False), (6.2e-5, True), (0.01, True)])
def test_fp16_scales_must_be_normal(scale, ok):
    rules = [v.rule for v in check_tensorrt_onnx(_int4_matmul(scale=scale), "int4")]
    assert rules == ([] if ok else ["normal fp16 scale"])


def _q_dq(zero_point: np.ndarray | None = None, output_dtype: int | None = None, opset: int = 21) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["b", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["b", 4])
    inits = [numpy_helper.from_array(np.array(0.1, np.float16), "s")]
    q_in = ["x", "s"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "zp"))
        q_in.append("zp")
    kw = {} if output_dtype is None else {"output_dtype": output_dtype}
    nodes = [helper.make_node("QuantizeLinear", q_in, ["q"], **kw), helper.make_node("DequantizeLinear", ["q", *q_in[1:]], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.mark.parametrize("zero_point, output_dtype, ok", [
    (None, None, False),  # ONNX's default output: UINT8
    (np.array(0, np.uint8), None, False),
    (None, TensorProto.INT8, True),
    (np.array(0, np.int8), None, True),
])
def test_quantize_linear_must_write_int8(zero_point, output_dtype, ok):
    rules = [v.rule for v in check_tensorrt_onnx(_q_dq(zero_point, output_dtype), "int8")]
    assert rules == ([] if ok else ["signed INT8 QuantizeLinear output"])


def test_asymmetric_zero_point_is_rejected():
    v = check_tensorrt_onnx(_int4_matmul(zero_point=3), "int4")
    assert any(x.rule == "symmetric only" for x in v)


def test_unsigned_int4_and_fp32_graph_are_rejected():
    rules = {x.rule for x in check_tensorrt_onnx(_int4_matmul(codes_dtype=ml_dtypes.uint4), "int4")}
    assert "signed only" in rules
    rules = {x.rule for x in check_tensorrt_onnx(_int4_matmul(fdtype=np.float32), "int4")}
    assert "fp16 graph for INT4" in rules


def test_int4_on_gather_is_rejected():
    rules = {x.rule for x in check_tensorrt_onnx(_int4_matmul(consumer="Gather"), "int4")}
    assert "INT4 on MatMul/Gemm weights only" in rules


def test_int8_per_channel_activation_and_zero_point_rejected():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])
    inits = [numpy_helper.from_array(np.full(4, 0.1, np.float32), "s_vec"),
             numpy_helper.from_array(np.array(3, np.int8), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_vec", "zp"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s_vec", "zp"], ["y"], axis=1)]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 18)])
    rules = {v.rule for v in check_tensorrt_onnx(m, "int8")}
    assert {"symmetric only", "per-tensor activations"} <= rules


def test_build_engine_without_tensorrt_raises_backend_unavailable(tmp_path):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here; the real build is covered by the tensorrt-marked test")
    except ImportError:
        pass
    from tlc_export.export.tensorrt import build_engine, default_shapes

    p = tmp_path / "m.onnx"
    onnx.save(_int4_matmul(), p)
    with pytest.raises(BackendUnavailable, match="TensorRT is not importable"):
        build_engine(p, "int4", default_shapes(4, 16), tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def _run_engine(path, x: np.ndarray) -> np.ndarray:
    """Plain TensorRT (10.x / 11.x name-based API): deserialize, set the input shape, run once on the GPU."""
    import tensorrt as trt
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    assert engine is not None
    context = engine.create_execution_context()
    context.set_input_shape("x", x.shape)
    x_dev = torch.from_numpy(x).cuda()
    y_dev = torch.empty(tuple(context.get_tensor_shape("y")), dtype=torch.float16, device="cuda")
    context.set_tensor_address("x", x_dev.data_ptr())
    context.set_tensor_address("y", y_dev.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return y_dev.cpu().numpy()


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_int4_engine_outputs_equal_onnx_runtime_within_the_fp16_tolerance(tmp_path):
    """The engine built from an INT4 weight-only graph computes what ONNX Runtime (CPU) computes from the same
    file, within the fp16 format's export tolerance (max |diff| ≤ 5e-2 × max(1, max |ORT output|))."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (docker/Dockerfile.tensorrt has it)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from tlc_export.export.session import session
    from tlc_export.export.tensorrt import build_engine
    from tlc_export.export.validate import TOLERANCE

    p = tmp_path / "m.onnx"
    onnx.save(_int4_matmul(), p)
    info = build_engine(p, "int4", {"min": (1, 64), "opt": (4, 64), "max": (8, 64)}, tmp_path / "m.engine",
                        timing_cache=tmp_path / "t.cache")
    assert info["bytes"] > 0 and (tmp_path / "t.cache").is_file()
    for batch in (1, 5, 8):  # inside the profile, off its opt point too
        x = np.random.default_rng(batch).normal(0, 1, (batch, 64)).astype(np.float16)
        want = np.asarray(session(p, exact=True).run(None, {"x": x})[0], dtype=np.float32)
        got = _run_engine(tmp_path / "m.engine", x).astype(np.float32)
        assert got.shape == want.shape == (batch, 16)
        scale = max(1.0, float(np.abs(want).max()))
        assert float(np.abs(got - want).max()) <= TOLERANCE["fp16"] * scale
        assert float(np.abs(want).max()) > 0.05  # a real signal, not zeros on both sides
