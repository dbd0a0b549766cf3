"""The export stage on a fabricated run directory: a tiny finetuned classifier and real compress artifacts."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from rich.console import Console

from tlc_export.compress.artifact import load_artifact, save_artifact
from tlc_export.compress.quantize import QuantConfig, quantize_
from tlc_export.compress.variants import variant_name
from tlc_export.export import validate as V
from tlc_export.export.trt_rules import check_tensorrt_onnx
from tlc_export.finetune import TrainSettings, finetune_, save_classifier
from tlc_export.finetune.toy import toy_classifier, toy_examples, toy_tokenizer
from tlc_export.recipe import parse_recipe
from tlc_export.rundir import RunDir
from tlc_export.stages.base import StageContext
from tlc_export.tasks.classification.family import ClassificationFamily
from tlc_export.tasks.classification.stages.export import ExportStage, fusable_int4

SIZE = "2L-32H"
FORMATS = ["onnx-fp32", "onnx-fp16", "onnx-int8", "onnx-int8-dynamic", "onnx-int8-static", "onnx-int4",
           "onnx-int4-matmulnbits", "tensorrt-int8", "tensorrt-int4"]
RECIPE = f"""
models: {{sizes: [{{layers: 2, hidden: 32}}]}}
pretrain: {{time_budget_s: 1}}
finetune:
  task: {{kind: jsonl, path: task.jsonl, dev_fraction: 0.2, test_fraction: 0.2}}
  max_length: 32
compress:
  quantize: {{bits: [8, 4]}}
  prune: {{sparsity: []}}
export:
  formats: {json.dumps(FORMATS)}
  sparsity: []
  calibration_samples: 8
  validation_samples: 8
  trt_max_seq_len: 32
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def _torch_accuracy_fields(m: torch.nn.Module, run: RunDir, task) -> dict:
    """`<split>_accuracy` and its Wilson interval for a fake-quant torch model, as the compress stage's row has them."""
    from tlc_export.stats import accuracy_interval

    out = {}
    for split, ex in (("dev", task.dev), ("test", task.test)):
        batches = V.encode_by_length(run.stage_dir("finetune") / SIZE / "model", ex, 32, 32)
        correct = np.concatenate([lg.argmax(-1) == b.labels for lg, b in zip(V.torch_logits(m, batches), batches, strict=True)])
        acc = accuracy_interval(correct)
        out.update({f"{split}_accuracy": acc.accuracy, f"{split}_accuracy_ci": [acc.ci_low, acc.ci_high]})
    return out


def _compress_rows(run: RunDir, model: torch.nn.Module, bits_list: list[int], trt: bool = False, task=None) -> list[dict]:
    """What the compress stage writes for the dense level: one artifact + row per grid (with its torch
    accuracy and interval when `task` is given)."""
    out = run.stage_dir("compress")
    grids = [(b, None if b == 32 else QuantConfig(bits=b), None) for b in bits_list]  # the paper grid: the case with rank-1 features
    if trt:
        grids.append((4, QuantConfig(bits=4, granularity="block", group_size=64, symmetric=True, matrices_only=True),
                      "sym-g64"))
    rows = []
    for bits, qcfg, tag in grids:
        m = copy.deepcopy(model)
        q = quantize_(m, qcfg) if qcfg is not None else None
        variant = variant_name(SIZE, 0.0, bits, tag)
        rel = f"compress/{SIZE}/variants/{variant}.safetensors"
        rep = save_artifact(run.root / rel, m, q, None, meta={"variant": variant})
        rows.append({"variant": variant, "model": SIZE, "bits": bits, "sparsity": 0.0, "sparsity_reached": 0.0,
                     "granularity": None if qcfg is None else qcfg.granularity, "grid": tag,
                     "symmetric": None if qcfg is None else qcfg.symmetric, "tensorrt_int4": tag is not None,
                     "artifact": rel, **rep.to_dict(), "pruned_model_dir": f"finetune/{SIZE}/model",
                     **(_torch_accuracy_fields(m, run, task) if task is not None else {})})
    (out / "results.json").write_text(json.dumps(rows))
    return rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tlc_export.data import load_task

    tmp = tmp_path_factory.mktemp("export_stage")
    with open(tmp / "task.jsonl", "w") as f:
        for e in toy_examples(200, seed=0):
            f.write(json.dumps({"text": e.text, "label": e.label}) + "\n")
    recipe = parse_recipe(RECIPE, base_dir=tmp)
    task = load_task(recipe.finetune.task, recipe)
    tok = toy_tokenizer()
    model = toy_classifier(tok, seed=0)
    finetune_(model, TrainSettings(lr=2e-3, batch_size=32, max_steps=20, max_length=32, eval_every_steps=20),
              tokenizer=tok, train=task.train, dev=task.dev)
    model = model.float().eval()
    run = RunDir(tmp / "run")
    save_classifier(model, tok, run.stage_dir("finetune") / SIZE / "model")
    rows = _compress_rows(run, model, [32, 8, 4], trt=True, task=task)
    return recipe, run, model, rows, task


def _run_export(recipe, run: RunDir) -> tuple[dict, list[dict]]:
    out = run.stage_dir("export")
    out.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(family=ClassificationFamily(), recipe=recipe, run_dir=run, out_dir=out, inputs={},
                       console=Console(file=io.StringIO(), width=160))
    outputs = ExportStage().run(ctx)
    return outputs, json.loads((out / "results.json").read_text())


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _check_cpu_fusions(run: RunDir, by: dict, task, keys) -> None:
    """Each CPU file is the fused graph (one com.microsoft Attention per layer, ORT's fusions less
    SkipLayerNormalization), computing what the exporter's unfused graph beside it computes (plain
    onnxruntime, padded batches)."""
    import onnxruntime as ort

    from tlc_export.data import load_tokenizer

    tok = load_tokenizer(run.stage_dir("finetune") / SIZE / "model")
    batches = V.encode(tok, task.dev[:24], 32, 8)
    assert any((b.attention_mask == 0).any() for b in batches), "the check needs padded rows"
    for key in keys:
        r = by[key]
        opt = r["graph_optimization"]
        assert opt["applied"] and opt["attention_fused"] == 2, (key, opt)
        assert opt["fusions"]["BiasGelu"] == 2 and "SkipLayerNormalization" not in opt["fusions"], opt
        assert "SkipLayerNormalization" not in _ops(run.root / r["path"]), key  # slower on CPU than Add + LayerNorm
        if r.get("codes") == "compress":  # own codes on integer kernels (no unfused twin): packed QKV, then
            # QAttention on 8-bit integer GEMMs (always for onnx-int8), MultiHeadAttention after MatMulNBits
            assert opt["fusions"]["MultiHeadAttention"] == 2, opt
            attention = "QAttention" if "QAttention" in r["kernels"].split("+") else "MultiHeadAttention"
            if key[1] == "onnx-int8":
                assert attention == "QAttention", r["kernels"]
            assert attention in _ops(run.root / r["path"]) and "Softmax" not in _ops(run.root / r["path"])
            continue
        assert opt["fusions"]["Attention"] == 2, opt
        fused, raw = run.root / r["path"], run.root / r["unfused_path"]
        assert fused.name == f"{key[1]}.onnx" and raw.name == f"{key[1]}.unfused.onnx"
        assert "Attention" in _ops(fused) and "Softmax" not in _ops(fused) and "Attention" not in _ops(raw)
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")  # no int8-activation INT4 fusion
        a, b = (ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in (fused, raw))
        for batch in batches:
            la, lb = (s.run(None, batch.feeds())[0] for s in (a, b))
            np.testing.assert_allclose(la, lb, rtol=0, atol=1e-5 * max(1.0, float(np.abs(lb).max())))


def _tensorrt_here() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


def test_every_format_has_a_valid_row(run_dir):
    from tlc_export.compress.artifact import load_model
    from tlc_export.data import load_tokenizer
    from tlc_export.predictions import load_predictions

    recipe, run, model, comp_rows, task = run_dir
    outputs, rows = _run_export(recipe, run)
    by = {(r["variant"], r["format"]): r for r in rows}
    b32, b8, b4 = (variant_name(SIZE, 0.0, b) for b in (32, 8, 4))
    sym = variant_name(SIZE, 0.0, 4, "sym-g64")
    fp_formats = [f for f in FORMATS if f not in ("onnx-int8", "onnx-int4", "tensorrt-int4")]
    expected = ({(b32, f) for f in fp_formats} | {(b8, "onnx-int8"), (b4, "onnx-int4"), (sym, "onnx-int4"),
                                                   (sym, "tensorrt-int4")})
    assert set(by) == expected, "format ↔ variant mapping: TensorRT INT4 only from the TensorRT grid"
    assert outputs["rows"] == len(expected)
    comp = {r["variant"]: r for r in comp_rows}
    for key, r in by.items():
        if r["format"].startswith("tensorrt"):
            assert r["onnx_path"] and (run.root / r["onnx_path"]).is_file() and r["trt_violations"] == []
            if _tensorrt_here():  # an engine is built, and it is the file the row names
                assert r["status"] == "ok", (key, r["reason"])
                engine = run.root / r["path"]
                assert engine.suffix == ".engine" and engine.stat().st_size == r["file_bytes"] > 0
                assert r["tensorrt_version"] and r["trt_profiles"] and r["gpu"]
            else:
                assert r["status"] == "unavailable" and "TensorRT" in r["reason"], (key, r["reason"])
                assert r["path"] is None and r["file_bytes"] is None
            assert r.get("test_accuracy") is None  # the ONNX file's accuracy is not the engine's
            continue
        assert r["status"] == "ok", (key, r["reason"])
        assert (run.root / r["path"]).is_file()
        # Each file's own accuracy on both splits, from its stored per-example predictions.
        preds = load_predictions(run.root / r["predictions"])
        assert preds["test"].accuracy == pytest.approx(r["test_accuracy"]) and len(preds["dev"].labels) == len(task.dev)
        assert r["test_accuracy_ci"][0] <= r["test_accuracy"] <= r["test_accuracy_ci"][1]
        # A row's storage is its own model's: code-carrying files = the artifact they hold; files that ORT
        # re-quantized are models of their own and claim no artifact storage.
        if r["format"] in ("onnx-int8", "onnx-int4"):
            assert r["storage_bytes"] == comp[r["variant"]]["storage_bytes"] and r["codes"] == "compress"
        else:
            assert r["storage_bytes"] is None
    _check_cpu_fusions(run, by, task, [(b32, "onnx-fp32"), (b8, "onnx-int8"), (b4, "onnx-int4")])
    assert by[(b32, "onnx-int8-dynamic")]["graph_optimization"]["applied"]
    assert "QAttention" in _ops(run.root / by[(b32, "onnx-int8-dynamic")]["path"])
    # the embedding tables are INT8 too (as in ONNX Runtime's default quantize_dynamic): no 2-D fp32 weight is left
    dyn = onnx.load(str(run.root / by[(b32, "onnx-int8-dynamic")]["path"])).graph
    assert [i.name for i in dyn.initializer if len(i.dims) == 2 and i.data_type == onnx.TensorProto.FLOAT] == []
    emb = [model.config.vocab_size, model.config.hidden_size]
    assert any(list(i.dims) == emb and i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for i in dyn.initializer)
    assert "Attention" not in _ops(run.root / by[(sym, "tensorrt-int4")]["onnx_path"])  # TensorRT gets standard ONNX
    # The static Q/DQ file TensorRT INT8 needs is there although onnx-int8-static is also listed here;
    # it is the same file.
    # TensorRT INT8 reads that file turned into an fp16 graph (fp16 scales, no fp32 initializer).
    trt8 = run.root / by[(b32, "tensorrt-int8")]["onnx_path"]
    assert trt8.name == "tensorrt-int8.onnx" and trt8.is_file()
    assert check_tensorrt_onnx(trt8, "int8") == []
    assert any(v.rule == "fp16 graph for INT8" for v in check_tensorrt_onnx(run.root / by[(b32, "onnx-int8-static")]["path"], "int8"))
    assert by[(b8, "onnx-int8")]["storage_bytes"] == comp_rows[1]["storage_bytes"]

    # onnx-int8 and onnx-int4 hold the artifact's own codes, bit for bit, on integer kernels.
    refs = json.loads((run.stage_dir("export") / SIZE / "graph.onnx.refs.json").read_text())["refs"]
    for key, comp_row in ((b8, comp_rows[1]), (b4, comp_rows[2])):
        r = by[(key, "onnx-int8" if key == b8 else "onnx-int4")]
        assert r["integer_kernels"]["applied"] and not r["integer_kernels"]["fallback"], r["integer_kernels"]
        art = load_artifact(run.root / comp_row["artifact"])
        proto = onnx.load(str(run.root / r["path"]))
        # no weight dequantized per call: the one DequantizeLinear kind left reads table rows already looked up
        assert not [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and not n.input[0].endswith("__gathered")]
        checked = _check_stored_codes(proto, art, refs, r["integer_kernels"]["packed"])
        assert checked >= 2 * 4 + 1 + 2  # packed QKV, output, two FFN matrices per layer; the word table; the head
        assert r["within_compress_ci"] == {"dev": True, "test": True}, r
    assert by[(b8, "onnx-int8")]["tolerance_name"] == "int8-act"
    # every weight matrix and table is stored as codes: no 2-D fp32 initializer is left in either file
    for key, fmt in ((b8, "onnx-int8"), (b4, "onnx-int4")):
        g = onnx.load(str(run.root / by[(key, fmt)]["path"])).graph
        assert [i.name for i in g.initializer if len(i.dims) == 2 and i.data_type == onnx.TensorProto.FLOAT
                and min(i.dims) > 1] == [], fmt

    # onnx-int4 reproduces the model the compress artifact's own loader builds, in an exact and in a plain
    # ONNX Runtime session, within its row's stated tolerance.
    path4 = run.root / by[(b4, "onnx-int4")]["path"]
    reference_model = load_model(run.root / comp_rows[2]["artifact"]).float().eval()
    tok = load_tokenizer(run.stage_dir("finetune") / SIZE / "model")
    batches = V.encode(tok, task.dev[:16] + task.test[:16], 32, 8)
    reference = V.torch_logits(reference_model, batches)
    name4 = by[(b4, "onnx-int4")]["tolerance_name"]
    scale4 = max(float(np.abs(x).max()) for x in reference)
    tol4 = V.TOLERANCE[name4] * (scale4 if name4 in V.RELATIVE else max(1.0, scale4))
    for sess in (V.session(path4, exact=True), V.session(path4)):
        got = V.onnx_logits(sess, batches)
        assert max(float(np.abs(g - r).max()) for g, r in zip(got, reference, strict=True)) <= tol4

    # The TensorRT variant's onnx-int4 holds its signed block codes; its TensorRT input is fp16 with INT4
    # only on MatMul weights and passes TensorRT's rules.
    sym_row = by[(sym, "onnx-int4")]
    # its block grid runs on MatMulNBits (DynamicQuantizeMatMul has no blocks), exactly: fp32 tolerance
    assert "MatMulNBits" in _ops(run.root / sym_row["path"]) and sym_row["integer_kernels"]["applied"]
    assert sym_row["tolerance_name"] == "fp32" and sym_row["kernels"].startswith("MatMulNBits")
    trt_init = {i.name: i for i in onnx.load(str(run.root / by[(sym, "tensorrt-int4")]["onnx_path"])).graph.initializer}
    assert any(i.data_type == onnx.TensorProto.INT4 for i in trt_init.values())
    assert not any(i.data_type == onnx.TensorProto.UINT4 for i in trt_init.values())
    assert not fusable_int4(onnx.load(str(path4)))


def _unpack_nibbles(a: np.ndarray) -> np.ndarray:
    """Two 4-bit codes per byte, low nibble first, along the last axis."""
    return np.stack([a & 15, a >> 4], axis=-1).reshape(*a.shape[:-1], 2 * a.shape[-1])


def _check_stored_codes(proto, art, refs: dict, packed: dict) -> int:
    """Each integer kernel's stored codes, read back with numpy, equal the artifact's codes of the weights it
    holds (side by side for packed QKV), in the kernel's layout; returns how many kernels were checked."""
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    checked = 0
    for node in proto.graph.node:
        if node.op_type == "Gather" and node.input[0].endswith("__codes"):  # an 8-bit table with one scale
            w = node.input[0].rsplit("__", 1)[0]
            (q, _), = [(art.quantized[refs[w]["param"]], refs[w]["transposed"])]
            np.testing.assert_array_equal(inits[node.input[0]].astype(np.int16),
                                          q.codes.numpy().astype(np.int16) + (128 if q.symmetric else 0))
            checked += 1
            continue
        if node.op_type not in ("DynamicQuantizeMatMul", "MatMulNBits", "GatherBlockQuantized", "QAttention", "Gemm"):
            continue
        # QAttention's weight is `<packed>__qkv_codes`; the other kernels are named `<weight>__<kernel>`
        w = (node.input[1] if node.op_type in ("QAttention", "Gemm") else node.name).rsplit("__", 1)[0]
        if node.op_type == "Gemm":  # the head: codes in the torch layout, rebuilt in fp32 at load
            if f"{w}__codes" not in inits:
                continue
            q = art.quantized[refs[w]["param"]]
            np.testing.assert_array_equal(inits[f"{w}__codes"].astype(np.int16), q.codes.numpy().astype(np.int16))
            checked += 1
            continue
        qs = [(art.quantized[refs[src]["param"]], refs[src]["transposed"]) for src in packed.get(w, [w])]
        if node.op_type == "GatherBlockQuantized":
            (q, _), = qs
            stored = inits[node.input[0]]
            got = _unpack_nibbles(stored) if q.bits <= 4 else stored
            np.testing.assert_array_equal(got.astype(np.int16), q.codes.numpy().astype(np.int16) + (2 ** (q.bits - 1) if q.symmetric else 0))
            checked += 1
            continue
        # every Linear here is a transposed MatMul weight or the head's Gemm(transB=1): kernel layout [K, N] = codesᵀ
        want = np.concatenate([q.codes.numpy().T.astype(np.int16) for q, _ in qs], axis=1)
        if node.op_type == "MatMulNBits":
            k = next(a.i for a in node.attribute if a.name == "K")
            blocks = _unpack_nibbles(inits[node.input[1]])  # [N, nb, bs]
            got = blocks.reshape(blocks.shape[0], -1)[:, :k].T.astype(np.int16)
            np.testing.assert_array_equal(got, want + (8 if qs[0][0].symmetric else 0))
        elif node.input[1] in inits:  # 8-bit codes shifted into int8 (asymmetric: − 128), then the rank-1 feature rows
            np.testing.assert_array_equal(inits[node.input[1]][: want.shape[0]].astype(np.int16),
                                          want - (0 if qs[0][0].symmetric else 128))
        else:  # 4-bit codes stored two per byte, widened (and feature rows appended) at load
            stored = next(inits[n] for n in (f"{node.input[1]}__nibbles", f"{w}__codes__nibbles", f"{w}__qkv_nibbles__nibbles")
                          if n in inits)
            nib = _unpack_nibbles(stored)[:, : want.shape[1]]
            np.testing.assert_array_equal(nib.astype(np.int16), want + (8 if qs[0][0].symmetric else 0))
        checked += 1
    return checked


def test_six_bit_goes_to_int8_and_no_four_bit_variant_means_no_int4_file(run_dir, tmp_path, monkeypatch):
    import shutil

    import tlc_export.export.optimize as optimize

    real = optimize.optimize_for_cpu

    def broken(src, dst, *a, **kw):  # a fusion that changes the function: validation must reject it
        out = real(src, dst, *a, **kw)
        proto = onnx.load(str(dst))
        ln = next(i for i in proto.graph.initializer if i.name.endswith("LayerNorm.weight"))
        ln.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(ln) * 3, ln.name))
        onnx.save(proto, str(dst))
        return out

    real_proto = optimize.optimize_proto

    def broken_proto(model, *a, **kw):  # the integer-kernel files' fusion, broken too (a shifted head bias)
        out, info = real_proto(model, *a, **kw)
        b = next(i for i in out.graph.initializer if i.name.endswith("classifier.dense.bias"))
        b.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(b) + 1.0, b.name))
        return out, info

    monkeypatch.setattr(optimize, "optimize_for_cpu", broken)
    monkeypatch.setattr(optimize, "optimize_proto", broken_proto)
    recipe, run, model, _, _ = run_dir
    run2 = RunDir(tmp_path / "run")
    shutil.copytree(run.stage_dir("finetune"), run2.stage_dir("finetune"))
    # Reuse the exported graph of the first test (resumable template): the dynamo export is the slow part.
    (run2.stage_dir("export") / SIZE).mkdir(parents=True)
    for f in ("graph.onnx", "graph.onnx.refs.json"):
        shutil.copy(run.stage_dir("export") / SIZE / f, run2.stage_dir("export") / SIZE / f)
    comp = _compress_rows(run2, model, [32, 6])
    r2 = recipe.model_copy(deep=True)
    r2.export.formats = ["onnx-int8", "onnx-int4", "tensorrt-int4"]
    _, rows = _run_export(r2, run2)
    by = {(r["variant"], r["format"]): r for r in rows}
    b6 = variant_name(SIZE, 0.0, 6)
    # No 4-bit variant: no INT4 file at all (nothing is re-quantized to stand in for one).
    assert set(by) == {(b6, "onnx-int8")}
    assert all(r["status"] == "ok" for r in rows), [r["reason"] for r in rows]
    six = by[(b6, "onnx-int8")]
    assert six["storage_bytes"] == comp[1]["storage_bytes"] < six["file_bytes"]  # packed 6-bit < INT8 container
    codes = [numpy_helper.to_array(i) for i in onnx.load(str(run2.root / six["path"])).graph.initializer
             if i.name.endswith("__codes")]
    assert codes and all(c.dtype == np.uint8 and int(c.max()) <= 63 for c in codes)
    for r in rows:  # the broken fusion was caught: each file is the exporter's graph, with the reason
        assert not r["integer_kernels"]["applied"] and "does not match the reference" in r["integer_kernels"]["reason"]
        assert r["path"].endswith(".unfused.onnx") and not r["graph_optimization"]["applied"], r
        assert "does not match the reference" in r["graph_optimization"]["reason"]
        assert not (run2.root / r["path"].replace(".unfused.onnx", ".onnx")).exists()
