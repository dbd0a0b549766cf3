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
from tlc_export.export import validate as V
from tlc_export.export.int4 import requantize_block
from tlc_export.export.trt_rules import check_tensorrt_onnx
from tlc_export.finetune import TrainSettings, finetune_, save_classifier
from tlc_export.finetune.toy import toy_classifier, toy_examples, toy_tokenizer
from tlc_export.recipe import parse_recipe
from tlc_export.rundir import RunDir
from tlc_export.stages.base import StageContext
from tlc_export.stages.compress import variant_name
from tlc_export.stages.export import ExportStage

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


def _compress_rows(run: RunDir, model: torch.nn.Module, bits_list: list[int]) -> list[dict]:
    """What the compress stage writes for the dense level: one artifact + row per bit width."""
    out = run.stage_dir("compress")
    rows = []
    for bits in bits_list:
        m = copy.deepcopy(model)
        q = quantize_(m, QuantConfig(bits=bits)) if bits != 32 else None  # the recipe default grid
        variant = variant_name(SIZE, 0.0, bits)
        rel = f"compress/{SIZE}/variants/{variant}.safetensors"
        rep = save_artifact(run.root / rel, m, q, None, meta={"variant": variant})
        rows.append({"variant": variant, "model": SIZE, "bits": bits, "sparsity": 0.0, "sparsity_reached": 0.0,
                     "granularity": None if bits == 32 else "per-tensor", "symmetric": None if bits == 32 else False,
                     "artifact": rel, **rep.to_dict(), "pruned_model_dir": f"finetune/{SIZE}/model"})
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
    rows = _compress_rows(run, model, [32, 8, 4])
    return recipe, run, model, rows, task


def _run_export(recipe, run: RunDir) -> tuple[dict, list[dict]]:
    out = run.stage_dir("export")
    out.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(recipe=recipe, run_dir=run, out_dir=out, inputs={},
                       console=Console(file=io.StringIO(), width=160))
    outputs = ExportStage().run(ctx)
    return outputs, json.loads((out / "results.json").read_text())


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _check_cpu_fusions(run: RunDir, by: dict, task, keys) -> None:
    """Each CPU file is the fused graph (one com.microsoft Attention per layer, ORT's fusions), computing
    what the exporter's unfused graph beside it computes (plain onnxruntime, padded batches)."""
    import onnxruntime as ort

    from tlc_export.data import load_tokenizer

    tok = load_tokenizer(run.stage_dir("finetune") / SIZE / "model")
    batches = V.encode(tok, task.dev[:24], 32, 8)
    assert any((b.attention_mask == 0).any() for b in batches), "the check needs padded rows"
    for key in keys:
        r = by[key]
        opt = r["graph_optimization"]
        assert opt["applied"] and opt["attention_fused"] == 2, (key, opt)
        assert opt["fusions"]["Attention"] == 2 and opt["fusions"]["SkipLayerNormalization"] == 4, opt
        fused, raw = run.root / r["path"], run.root / r["unfused_path"]
        assert fused.name == f"{key[1]}.onnx" and raw.name == f"{key[1]}.unfused.onnx"
        assert "Attention" in _ops(fused) and "Softmax" not in _ops(fused) and "Attention" not in _ops(raw)
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")  # no int8-activation INT4 fusion
        a, b = (ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in (fused, raw))
        for batch in batches:
            la, lb = (s.run(None, batch.feeds())[0] for s in (a, b))
            np.testing.assert_allclose(la, lb, rtol=0, atol=1e-5 * max(1.0, float(np.abs(lb).max())))


def test_every_format_has_a_valid_row(run_dir):
    recipe, run, model, comp_rows, task = run_dir
    outputs, rows = _run_export(recipe, run)
    by = {(r["variant"], r["format"]): r for r in rows}
    b32, b8, b4 = (variant_name(SIZE, 0.0, b) for b in (32, 8, 4))
    fp_formats = [f for f in FORMATS if f not in ("onnx-int8", "onnx-int4", "tensorrt-int4")]
    expected = {(b32, f) for f in fp_formats} | {(b8, "onnx-int8"), (b4, "onnx-int4"), (b4, "tensorrt-int4")}
    assert set(by) == expected, "format ↔ variant mapping"
    assert outputs["rows"] == len(expected)
    for key, r in by.items():
        if r["format"].startswith("tensorrt"):
            assert r["status"] in ("ok", "unavailable"), (key, r["reason"])
            assert r["onnx_path"] and (run.root / r["onnx_path"]).is_file() and r["trt_violations"] == []
            if r["status"] == "unavailable":
                assert "TensorRT" in r["reason"]
            else:
                assert (run.root / r["path"]).suffix == ".engine"
        else:
            assert r["status"] == "ok", (key, r["reason"])
            assert (run.root / r["path"]).is_file()
    _check_cpu_fusions(run, by, task, [(b32, "onnx-fp32"), (b8, "onnx-int8"), (b4, "onnx-int4")])
    assert by[(b32, "onnx-int8-dynamic")]["graph_optimization"]["applied"]
    assert "QAttention" in _ops(run.root / by[(b32, "onnx-int8-dynamic")]["path"])
    # the embedding tables are INT8 too (as in ONNX Runtime's default quantize_dynamic): no 2-D fp32 weight is left
    dyn = onnx.load(str(run.root / by[(b32, "onnx-int8-dynamic")]["path"])).graph
    assert [i.name for i in dyn.initializer if len(i.dims) == 2 and i.data_type == onnx.TensorProto.FLOAT] == []
    emb = [model.config.vocab_size, model.config.hidden_size]
    assert any(list(i.dims) == emb and i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for i in dyn.initializer)
    assert "Attention" not in _ops(run.root / by[(b4, "tensorrt-int4")]["onnx_path"])  # TensorRT gets standard ONNX
    # The static Q/DQ file TensorRT INT8 needs is there although onnx-int8-static is also listed here;
    # it is the same file.
    # TensorRT INT8 reads that file turned into an fp16 graph (fp16 scales, no fp32 initializer).
    trt8 = run.root / by[(b32, "tensorrt-int8")]["onnx_path"]
    assert trt8.name == "tensorrt-int8.onnx" and trt8.is_file()
    assert check_tensorrt_onnx(trt8, "int8") == []
    assert any(v.rule == "fp16 graph for INT8" for v in check_tensorrt_onnx(run.root / by[(b32, "onnx-int8-static")]["path"], "int8"))
    assert by[(b8, "onnx-int8")]["storage_bytes"] == comp_rows[1]["storage_bytes"]

    # onnx-int8 holds the artifact's own codes, bit for bit.
    art = load_artifact(run.root / comp_rows[1]["artifact"])
    proto = onnx.load(str(run.root / by[(b8, "onnx-int8")]["path"]))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    refs = json.loads((run.stage_dir("export") / SIZE / "graph.onnx.refs.json").read_text())["refs"]
    checked = 0
    for name, ref in refs.items():
        q = art.quantized.get(ref["param"])
        if q is None or len(q.shape) != 2:
            continue
        want = q.codes.numpy()
        np.testing.assert_array_equal(inits[f"{name}__codes"], want.T if ref["transposed"] else want)
        checked += 1
    assert checked >= 2 * 6 + 1  # every Linear of both layers + the word embedding

    # The INT4 file computes the b4 variant's weights re-quantized block-wise (1-D parameters: the
    # variant's own values), independently rebuilt here, within the fp32 tolerance.
    art4 = load_artifact(run.root / comp_rows[2]["artifact"])
    from tlc_export.compress.artifact import build_model

    ref4 = build_model(art4).float()
    w2 = {k: v.dequantize() for k, v in art4.quantized.items() if len(v.shape) == 2}
    q4 = requantize_block(w2, recipe.export.int4_block_size, symmetric=True)
    ref4.load_state_dict({**ref4.state_dict(), **{k: v.dequantize() for k, v in q4.items()}})
    from tlc_export.data import load_tokenizer

    tok = load_tokenizer(run.stage_dir("finetune") / SIZE / "model")
    batches = V.encode(tok, task.dev[:16], 32, 8)
    reference = V.torch_logits(ref4, batches)
    d, tol, _ = V.compare(run.root / by[(b4, "onnx-int4")]["path"], reference, batches, 1e-3)
    assert d <= tol
    assert by[(b4, "onnx-int4")]["codes"] == "requantized"


def test_six_bit_goes_to_int8_and_missing_four_bit_requantizes_fp32(run_dir, tmp_path, monkeypatch):
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

    monkeypatch.setattr(optimize, "optimize_for_cpu", broken)
    recipe, run, model, _, _ = run_dir
    run2 = RunDir(tmp_path / "run")
    shutil.copytree(run.stage_dir("finetune"), run2.stage_dir("finetune"))
    # Reuse the exported graph of the first test (resumable template): the dynamo export is the slow part.
    (run2.stage_dir("export") / SIZE).mkdir(parents=True)
    for f in ("graph.onnx", "graph.onnx.refs.json"):
        shutil.copy(run.stage_dir("export") / SIZE / f, run2.stage_dir("export") / SIZE / f)
    comp = _compress_rows(run2, model, [32, 6])
    r2 = recipe.model_copy(deep=True)
    r2.export.formats = ["onnx-int8", "onnx-int4"]
    _, rows = _run_export(r2, run2)
    by = {(r["variant"], r["format"]): r for r in rows}
    b32, b6 = variant_name(SIZE, 0.0, 32), variant_name(SIZE, 0.0, 6)
    assert set(by) == {(b6, "onnx-int8"), (b32, "onnx-int4")}
    assert all(r["status"] == "ok" for r in rows), [r["reason"] for r in rows]
    six = by[(b6, "onnx-int8")]
    assert six["storage_bytes"] == comp[1]["storage_bytes"] < six["file_bytes"]  # packed 6-bit < INT8 container
    codes = [numpy_helper.to_array(i) for i in onnx.load(str(run2.root / six["path"])).graph.initializer
             if i.name.endswith("__codes")]
    assert codes and all(c.dtype == np.uint8 and int(c.max()) <= 63 for c in codes)
    for r in rows:  # the broken fusion was caught: each file is the exporter's graph, with the reason
        assert r["path"].endswith(".unfused.onnx") and not r["graph_optimization"]["applied"], r
        assert "does not match the reference" in r["graph_optimization"]["reason"]
        assert not (run2.root / r["path"].replace(".unfused.onnx", ".onnx")).exists()
    four = by[(b32, "onnx-int4")]
    assert four["codes"] == "requantized-from-fp32" and four["source"] == b32 and four["bits"] == 4
    # re-quantized from the fp32 model, so close to it in accuracy though a different function
    assert abs(four["accuracy_diff_points"]) <= 10.0
