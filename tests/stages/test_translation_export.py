"""Translation export and bench: ONNX pairs with a variant's own weights, checked against PyTorch with
plain onnxruntime and plain transformers; the stages' rows, resume and BLEU through ONNX Runtime."""

from __future__ import annotations

import copy
import io
import json
import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from rich.console import Console

from tlc_export.compress.artifact import load_artifact, save_artifact
from tlc_export.compress.quantize import QuantConfig
from tlc_export.compress.variants import variant_name
from tlc_export.recipe import parse_recipe
from tlc_export.rundir import RunDir
from tlc_export.stages.base import StageContext
from tlc_export.tasks.translation.compress import quantize_translation_
from tlc_export.tasks.translation.data import ParallelPair
from tlc_export.tasks.translation.export import export_template, greedy_agreement, write_variant
from tlc_export.tasks.translation.family import TranslationFamily
from tlc_export.tasks.translation.model import build_translation_model
from tlc_export.tasks.translation.onnx import OrtTranslator
from tlc_export.tasks.translation.stages.bench import TranslationBenchStage
from tlc_export.tasks.translation.stages.export import TranslationExportStage, load_variant
from tlc_export.tasks.translation.tokenizer import PAD_ID, train_tokenizers

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = ["cat", "dog", "bird", "man", "woman", "child", "horse", "king"]
VERBS = {"sees": "voit", "likes": "aime", "calls": "appelle"}
FR = {"cat": "chat", "dog": "chien", "bird": "oiseau", "man": "homme", "woman": "femme", "child": "enfant",
      "horse": "cheval", "king": "roi"}
SIZE = "2L1D-32H"
RECIPE = """\
name: mt-export
translation:
  data: {kind: tsv, path: pairs.tsv, dev_fraction: 0.2, test_fraction: 0.2, max_eval_pairs: 10}
  tokenizer: {vocab_size: 300, min_frequency: 1}
  sizes: [{layers: 2, hidden: 32, decoder_layers: 1, heads: 2, ffn: 64}]
  max_source_length: 16
  max_target_length: 16
  dropout: 0.0
  train: {time_budget_s: 1}
  decoding: {strategy: beam, num_beams: 2, max_length: 12}
compress:
  quantize: {bits: [32, 8, 4]}
export:
  formats: [onnx-fp32, onnx-int8-dynamic, onnx-int8, onnx-int4]
  validation_samples: 8
bench:
  backends: [torch-eager, onnxruntime]
  batch_sizes: [1, 4]
  warmup: 0
  runs: 1
  threads: 1
"""


def _pairs(n: int = 300) -> list[ParallelPair]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        a, b, v = rng.choice(WORDS), rng.choice(WORDS), rng.choice(list(VERBS))
        out.append(ParallelPair(f"the {a} {v} the {b}", f"le {FR[a]} {VERBS[v]} le {FR[b]}", str(i)))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Marian with trained-looking (random but fixed) weights, its tokenizer, and its b8/b4 artifacts."""
    tmp = tmp_path_factory.mktemp("mt_export")
    cfg = parse_recipe(RECIPE).translation
    tok = train_tokenizers(_pairs(), cfg.tokenizer)
    model = build_translation_model(cfg.grid()[0], cfg, len(tok.source), seed=3).eval()
    return tmp, cfg, tok, model


def _variant_artifact(model, path, bits: int | None, **grid):
    m = copy.deepcopy(model)
    q = quantize_translation_(m, QuantConfig(bits=bits, **grid)) if bits else None
    rep = save_artifact(path, m, q, None, meta={"variant": path.stem})
    return m.eval(), rep


def _plain_logits(folder, enc, dec_ids):
    """Teacher-forced logits of the two files through bare onnxruntime sessions, one cached step at a time."""
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    e = ort.InferenceSession(str(folder / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
    d = ort.InferenceSession(str(folder / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])
    outs = e.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    layers = (len(outs) - 1) // 2
    cross = {f"cross_{kv}.{i}": outs[1 + 2 * i + j] for i in range(layers) for j, kv in enumerate("kv")}
    past = {k.replace("cross", "past"): np.zeros((*v.shape[:2], 0, v.shape[3]), np.float32) for k, v in cross.items()}
    out = []
    for t in range(dec_ids.shape[1]):
        res = d.run(None, {"decoder_input_ids": dec_ids[:, t:t + 1], "attention_mask": enc["attention_mask"], **cross, **past})
        out.append(res[0])
        past = {f"past_{kv}.{i}": res[1 + 2 * i + j] for i in range(layers) for j, kv in enumerate("kv")}
    return np.stack(out, 1)


SOURCES = ["the cat sees the dog", "the king calls the child", "the horse", "a sentence never seen before"]


def test_fp32_files_greedy_equal_generate(tiny):
    tmp, cfg, tok, model = tiny
    tpl = export_template(model, tmp / "tpl")
    write_variant(tpl, tmp / "fp32", model.state_dict())
    report = greedy_agreement(model, OrtTranslator.open(tmp / "fp32", threads=1), tok, SOURCES * 2,
                              max_source_length=16, max_length=12, batch_size=3)
    assert report["identical"] == len(SOURCES) * 2 and report["token_agreement"] == 1.0
    # and a different model's files do not pass for this one
    other = build_translation_model(cfg.grid()[0], cfg, len(tok.source), seed=11).eval()
    write_variant(tpl, tmp / "other", other.state_dict())
    bad = greedy_agreement(model, OrtTranslator.open(tmp / "other", threads=1), tok, SOURCES, max_source_length=16,
                           max_length=12)
    assert bad["mismatched"]
    from tlc_export.errors import ExportMismatchError
    from tlc_export.tasks.translation.export import teacher_forced_batch, teacher_forced_check

    batch = teacher_forced_batch(tok, _pairs(4), 16, 16)
    good = teacher_forced_check(model, OrtTranslator.open(tmp / "fp32", threads=1), batch, 1e-3, "fp32")
    # every position of a padded batch, step by step through the KV cache, against the model's own logits
    assert batch["attention_mask"].min() == 0 and good["max_abs_diff"] < 1e-4 < good["tolerance"]
    with pytest.raises(ExportMismatchError):
        teacher_forced_check(model, OrtTranslator.open(tmp / "other", threads=1), batch, 1e-3, "other")


@pytest.mark.parametrize("bits,grid,codes_dtype", [
    (8, {}, onnx.TensorProto.UINT8),
    (4, {}, onnx.TensorProto.UINT4),
    (4, {"granularity": "block", "group_size": 16, "symmetric": True}, onnx.TensorProto.INT4),
])
def test_own_code_files_reproduce_the_fake_quant_variant(tiny, bits, grid, codes_dtype):
    tmp, cfg, tok, model = tiny
    tpl = export_template(model, tmp / "tpl")
    art = tmp / f"v{bits}{len(grid)}.safetensors"
    fake, _ = _variant_artifact(model, art, bits, **grid)
    loaded = load_variant(art)
    codes = load_artifact(art).quantized
    folder = tmp / f"int{bits}-{len(grid)}"
    write_variant(tpl, folder, loaded.state_dict(), codes, container="int4" if bits == 4 else "int8")
    dec = onnx.load(str(folder / "decoder.onnx"))
    vocab, hidden = model.model.shared.weight.shape
    inits = {i.name: i for i in dec.graph.initializer}
    # the tied table is stored as codes, not as floats
    assert not [i for i in inits.values() if i.data_type == onnx.TensorProto.FLOAT and tuple(i.dims) in
                ((vocab, hidden), (hidden, vocab))]
    assert any(i.data_type == codes_dtype and tuple(i.dims) == (vocab, hidden) for i in inits.values())
    enc = tok.source(["the cat sees the dog", "the child"], padding=True, return_tensors="np")
    dec_ids = np.array([[PAD_ID, 5, 9, 17], [PAD_ID, 7, 7, 30]], dtype=np.int64)
    got = _plain_logits(folder, enc, dec_ids)
    with torch.no_grad():
        ref = fake(input_ids=torch.from_numpy(enc["input_ids"]), attention_mask=torch.from_numpy(enc["attention_mask"]),
                   decoder_input_ids=torch.from_numpy(dec_ids)).logits.numpy()
    assert np.abs(got - ref).max() < 1e-3 * max(1.0, np.abs(ref).max())
    with torch.no_grad():
        base = model(input_ids=torch.from_numpy(enc["input_ids"]), attention_mask=torch.from_numpy(enc["attention_mask"]),
                     decoder_input_ids=torch.from_numpy(dec_ids)).logits.numpy()
    assert np.abs(base - ref).max() > 10 * np.abs(got - ref).max()  # the check can tell quantized from fp32
    report = greedy_agreement(fake, OrtTranslator.open(folder, threads=1, exact=True), tok, SOURCES,
                              max_source_length=16, max_length=12)
    assert report["identical"] == len(SOURCES)


def test_int8_dynamic_files_are_smaller(tiny):
    from tlc_export.export.ort_quant import quantize_int8_dynamic

    tmp, cfg, tok, model = tiny
    tpl = export_template(model, tmp / "tpl")
    write_variant(tpl, tmp / "fp32d", model.state_dict())
    (tmp / "dyn").mkdir()
    for f in ("encoder.onnx", "decoder.onnx"):
        quantize_int8_dynamic(tmp / "fp32d" / f, tmp / "dyn" / f)
        assert (tmp / "dyn" / f).stat().st_size < 0.6 * (tmp / "fp32d" / f).stat().st_size
    out = OrtTranslator.open(tmp / "dyn", threads=1).greedy(*_ids(tok), 12)
    assert out.shape[0] == 2 and (out[:, 0] == PAD_ID).all()


def _ids(tok):
    enc = tok.source(["the cat sees the dog", "the child"], padding=True, return_tensors="np")
    return enc["input_ids"], enc["attention_mask"]


# -- the stages -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tiny):
    """A run directory as the translation and compress stages leave it (tokenizer, b32/b8/b4 rows)."""
    tmp, cfg, tok, model = tiny
    root = tmp / "stage"
    root.mkdir()
    with open(root / "pairs.tsv", "w") as f:
        f.write("en\tfr\n" + "".join(f"{p.source}\t{p.target}\n" for p in _pairs()))
    recipe = parse_recipe(RECIPE, base_dir=root)
    rd = RunDir(root / "run")
    tok.save(rd.stage_dir("translation") / "tokenizer")
    (rd.stage_dir("compress")).mkdir(parents=True, exist_ok=True)
    rows = []
    for bits in (32, 8, 4):
        v = variant_name(SIZE, 0.0, bits)
        rel = f"compress/{SIZE}/variants/{v}.safetensors"
        (rd.root / rel).parent.mkdir(parents=True, exist_ok=True)
        _, rep = _variant_artifact(model, rd.root / rel, None if bits == 32 else bits)
        rows.append({"variant": v, "model": SIZE, "sparsity": 0.0, "bits": bits, "artifact": rel, **rep.to_dict(),
                     "decoding": "beam"})
    (rd.stage_dir("compress") / "results.json").write_text(json.dumps(rows))
    # The size's exported pair (≈ 30 s of dynamo export) is the one the library tests made: the stage resumes from it.
    import shutil

    export_template(model, tmp / "tpl")
    shutil.copytree(tmp / "tpl", rd.stage_dir("export") / SIZE / "template")
    return recipe, rd, rows, model, tok


def _ctx(recipe, rd, stage):
    out = rd.stage_dir(stage)
    out.mkdir(parents=True, exist_ok=True)
    return StageContext(family=TranslationFamily(), recipe=recipe, run_dir=rd, out_dir=out, inputs={}, console=Console(file=io.StringIO(), width=200))


def test_export_stage_rows_and_resume(run, monkeypatch):
    recipe, rd, comp, model, tok = run
    TranslationExportStage().run(_ctx(recipe, rd, "export"))
    rows = json.loads((rd.stage_dir("export") / "results.json").read_text())
    by = {(r["variant"], r["format"]): r for r in rows}
    b32, b8, b4 = (variant_name(SIZE, 0.0, b) for b in (32, 8, 4))
    assert set(by) == {(b32, "onnx-fp32"), (b32, "onnx-int8-dynamic"), (b8, "onnx-int8"), (b4, "onnx-int4")}
    for r in rows:
        assert r["status"] == "ok", r["reason"]
        assert r["decoding"] == "greedy" and r["folder"] == f"export/{r['variant']}/{r['format']}"
        folder = rd.root / r["folder"]
        assert r["file_bytes"] == (folder / "encoder.onnx").stat().st_size + (folder / "decoder.onnx").stat().st_size
        for k in ("dev_bleu", "dev_bleu_ci", "test_bleu", "test_bleu_ci", "dev_chrf", "test_chrf", "bleu_signature"):
            assert k in r
        preds = json.loads((rd.root / r["predictions"]).read_text())
        assert len(preds["test"]["hypotheses"]) == r["test_n"]
    assert by[(b32, "onnx-fp32")]["validation"]["greedy"]["mismatched"] == []
    assert by[(b32, "onnx-fp32")]["storage_bytes"] == comp[0]["storage_bytes"]
    assert by[(b8, "onnx-int8")]["storage_bytes"] == comp[1]["storage_bytes"]
    assert by[(b32, "onnx-int8-dynamic")]["storage_bytes"] is None
    assert by[(b4, "onnx-int4")]["validation"]["greedy"]["token_agreement"] >= 0.95
    # BLEU of the fp32 file = BLEU of the PyTorch greedy translations, scored independently with sacrebleu
    import sacrebleu

    from tlc_export.config.translation import TranslationDecoding
    from tlc_export.tasks.translation.decode import translate

    preds = json.loads((rd.root / by[(b32, "onnx-fp32")]["predictions"]).read_text())["dev"]
    hyps = translate(model, tok, preds["sources"], TranslationDecoding(strategy="greedy", max_length=12), max_source_length=16)
    assert hyps == preds["hypotheses"]
    assert abs(sacrebleu.corpus_bleu(hyps, [preds["references"]]).score - by[(b32, "onnx-fp32")]["dev_bleu"]) < 1e-6

    # resume: finished rows are not redone (a rerun exports nothing, and keeps the rows)
    import tlc_export.tasks.translation.export as X

    def boom(*a, **k):
        raise AssertionError("re-exported a finished row")

    monkeypatch.setattr(X, "write_variant", boom)
    monkeypatch.setattr(X, "export_template", boom)
    TranslationExportStage().run(_ctx(recipe, rd, "export"))
    again = json.loads((rd.stage_dir("export") / "results.json").read_text())
    assert again == rows
    # a row whose folder vanished is redone
    monkeypatch.undo()
    import shutil

    shutil.rmtree(rd.root / by[(b8, "onnx-int8")]["folder"])
    TranslationExportStage().run(_ctx(recipe, rd, "export"))
    lines = [json.loads(x) for x in (rd.stage_dir("export") / "rows.jsonl").read_text().splitlines()]
    assert [(r["variant"], r["format"]) for r in lines].count((b8, "onnx-int8")) == 2
    assert len(lines) == 5


def test_bench_stage_rows(run):
    recipe, rd, comp, model, tok = run
    if not (rd.stage_dir("export") / "results.json").is_file():
        TranslationExportStage().run(_ctx(recipe, rd, "export"))
    exp = {(r["variant"], r["format"]): r for r in json.loads((rd.stage_dir("export") / "results.json").read_text())}
    TranslationBenchStage().run(_ctx(recipe, rd, "bench"))
    rows = [json.loads(x) for x in (rd.stage_dir("bench") / "results.jsonl").read_text().splitlines()]
    assert rows == json.loads((rd.stage_dir("bench") / "results.json").read_text())
    ort_rows = [r for r in rows if r["backend"] == "onnxruntime"]
    torch_rows = [r for r in rows if r["backend"] == "torch-eager"]
    assert {(r["format"], r["batch_size"]) for r in ort_rows} == {(f, b) for (_, f) in exp for b in (1, 4)}
    assert {r["variant"] for r in torch_rows} == {variant_name(SIZE, 0.0, 32)}  # the dense b32 only
    for r in rows:
        assert r["status"] == "ok", r.get("reason")
        for k in ("variant", "model", "backend", "format", "batch_size", "threads", "sentences", "sentences_per_s",
                  "p50_ms", "p90_ms", "dev_bleu", "dev_bleu_ci", "test_bleu", "test_bleu_ci", "decoding"):
            assert k in r, k
        assert r["decoding"] == "greedy" and r["threads"] == 1 and r["sentences"] == 4
        assert r["sentences_per_s"] > 0 and 0 < r["p50_ms"] <= r["p90_ms"]
    for r in ort_rows:  # BLEU of that same file
        e = exp[(r["variant"], r["format"])]
        assert r["dev_bleu"] == e["dev_bleu"] and r["test_bleu"] == e["test_bleu"] and r["file_bytes"] == e["file_bytes"]
    # torch eager: greedy BLEU of the b32 model (the compress row decoded with beams, so it is measured)
    fp32 = exp[(variant_name(SIZE, 0.0, 32), "onnx-fp32")]
    for r in torch_rows:
        assert r["dev_bleu"] == pytest.approx(fp32["dev_bleu"], abs=1e-9)  # the fp32 file decodes as torch does
        assert r["storage_bytes"] == comp[0]["storage_bytes"]
