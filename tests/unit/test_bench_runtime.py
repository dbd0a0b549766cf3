"""runtime_bench backends, harness, CLI and the bench stage on tiny models built here."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    PreTrainedTokenizerFast,
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForSequenceClassification,
)

from runtime_bench.backends import get_backend
from runtime_bench.backends.torch_quant import (
    Int4Config,
    Int4WeightOnlyLinear,
    Int8Config,
    Int8Linear,
    quantize_linears_int4_,
    quantize_linears_int8_,
)
from runtime_bench.harness import (
    FIELDS,
    BenchSettings,
    Variant,
    backend_accuracy,
    bench_variant,
    encode_split,
)
from tlc_export.data import Example
from tlc_export.models import LogitsOnly
from tlc_export.recipe import parse_recipe
from tlc_export.rundir import RunDir
from tlc_export.stages.base import StageContext
from tlc_export.tasks.classification.family import ClassificationFamily
from tlc_export.tasks.classification.stages.bench import BenchStage

WORDS = ["good", "bad", "film", "plot", "great", "awful", "the", "a", "story", "was", "fun", "dull"]
SIZE = "2L-64H"


def tiny_classifier(hidden: int = 64, layers: int = 2, seed: int = 0) -> RobertaPreLayerNormForSequenceClassification:
    torch.manual_seed(seed)
    cfg = RobertaPreLayerNormConfig(
        vocab_size=300, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=4 * hidden, max_position_embeddings=40, num_labels=2, pad_token_id=1,
    )
    return RobertaPreLayerNormForSequenceClassification(cfg).eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>")


def examples(n: int, seed: int) -> list[Example]:
    rng = np.random.default_rng(seed)
    return [Example(" ".join(rng.choice(WORDS, size=rng.integers(3, 20))), int(rng.integers(0, 2))) for _ in range(n)]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny classifier, its tokenizer and its ONNX file.

    The legacy exporter takes ~1 s here against ~15-40 s for the project's dynamo export_onnx;
    both write the same input_ids/attention_mask -> logits graph, and the export stage's own tests
    cover export_onnx.
    """
    root = tmp_path_factory.mktemp("bench")
    model = tiny_classifier()
    onnx_path = root / "onnx-fp32.onnx"
    ids = torch.randint(5, 300, (2, 8))
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}
    torch.onnx.export(LogitsOnly(model), (ids, torch.ones_like(ids)), str(onnx_path), input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], dynamic_axes=axes, opset_version=18, dynamo=False)
    return {"root": root, "model": model, "onnx": onnx_path, "tok": tiny_tokenizer()}


def test_onnxruntime_accuracy_equals_torch(work: dict) -> None:
    es = encode_split(work["tok"], examples(150, 1), "dev", max_length=24, batch_size=16)
    assert es.size == 150 and max(ids.shape[1] for ids, _, _ in es.batches) <= 24
    tb = get_backend("torch-eager", device="cpu")
    tb.load(work["model"])
    ob = get_backend("onnxruntime", threads=1)
    ob.load(work["onnx"])
    ids, mask, _ = es.batches[-1]
    assert np.abs(tb.run(ids, mask) - ob.run(ids, mask)).max() < 1e-4
    acc_t, acc_o = backend_accuracy(tb, es, 16), backend_accuracy(ob, es, 16)
    assert abs(acc_t - acc_o) <= 0.001


def test_serving_batches_score_what_tlc_predict_runs(work: dict) -> None:
    """pad_multiple=1, pad_last=False: the batches `tlc predict` runs (each padded to its longest row,
    the short last batch not filled with copies), so an accuracy is the served model's to the example."""
    exs = examples(37, 4)
    es = encode_split(work["tok"], exs, "test", max_length=24, batch_size=16, pad_multiple=1, pad_last=False)
    ref = work["tok"]([e.text for e in exs], truncation=True, max_length=24)["input_ids"]
    assert [len(lab) for _, _, lab in es.batches] == [16, 16, 5]
    seen = []
    for ids, mask, _ in es.batches:
        assert ids.shape[1] == int(mask.sum(1).max())  # no padding beyond the batch's longest row
        seen.extend(ids[r, : int(mask[r].sum())].tolist() for r in range(len(ids)))
    assert sorted(map(tuple, seen)) == sorted(map(tuple, ref))

    class Recorder:
        def __init__(self) -> None:
            self.shapes: list[tuple[int, ...]] = []

        def run(self, ids, mask):
            self.shapes.append(ids.shape)
            return np.zeros((len(ids), 2), dtype=np.float32)

    rec = Recorder()
    backend_accuracy(rec, es, 16)
    assert [s[0] for s in rec.shapes] == [16, 16, 5]
    rec.shapes.clear()
    backend_accuracy(rec, encode_split(work["tok"], exs, "test", max_length=24, batch_size=16), 16)
    assert [s[0] for s in rec.shapes] == [16, 16, 16]  # the timing-friendly default fills the last batch


def test_unavailable_backends_give_rows_not_crashes(work: dict) -> None:
    if torch.cuda.is_available():
        pytest.skip("on a CUDA machine these backends are available")
    v = Variant("tiny.s00.b32", work["model"], model=SIZE, vocab_size=300)
    rows = bench_variant(v, ["torch-int8", "torch-int4", "tensorrt"], ["fp32"], BenchSettings(batches=[1, 4], seq_len=8))
    rows += bench_variant(v, ["torch-eager"], ["fp16"], BenchSettings(batches=[1], seq_len=8))
    assert len(rows) == 7
    for r in rows:
        assert set(FIELDS) <= set(r)
        assert r["status"] == "unavailable" and r["reason"], r
    assert "CUDA" in rows[0]["reason"]


def test_broken_onnx_file_gives_failed_row(work: dict) -> None:
    bad = work["root"] / "broken.onnx"
    bad.write_bytes(b"not a protobuf")
    rows = bench_variant(Variant("broken", bad, format="onnx-fp32"), ["onnxruntime"], ["fp32"], BenchSettings(batches=[1], seq_len=8))
    assert [r["status"] for r in rows] == ["failed"] and rows[0]["reason"]


def test_timed_rows_have_every_field_and_ordered_percentiles(work: dict) -> None:
    es = encode_split(work["tok"], examples(40, 2), "dev", max_length=24, batch_size=8)
    s = BenchSettings(batches=[1, 4], seq_len=16, warmup=1, runs=5, threads=1, eval_batch_size=8)
    v = Variant(f"{SIZE}.s00.b32", work["onnx"], format="onnx-fp32", model=SIZE, storage_bytes=123, vocab_size=300)
    rows = bench_variant(v, ["onnxruntime"], ["fp32"], s, [es])
    assert [r["batch"] for r in rows] == [1, 4]
    for r in rows:
        assert set(FIELDS) <= set(r) and r["status"] == "ok", r
        assert r["latency_ms_min"] <= r["latency_ms_p50"] <= r["latency_ms_p90"] <= r["latency_ms_p99"] <= r["latency_ms_max"]
        assert r["throughput_seq_s"] > 0 and r["runs"] == 5 and r["threads"] == 1
        assert 0.0 <= r["accuracy"] <= 1.0 and r["accuracy_split"] == "dev" and "measured" in r["accuracy_source"]
    assert rows[0]["accuracy"] == rows[1]["accuracy"]  # measured once per (variant, backend)


def test_known_accuracy_is_reused_without_loading(work: dict) -> None:
    es = encode_split(work["tok"], examples(20, 3), "dev", max_length=24)
    v = Variant("x.s50.b4", work["root"] / "does-not-exist.safetensors", model=SIZE, known_accuracy={"dev": 0.8125},
                known_accuracy_source="compress", known_accuracy_backends=(("torch-eager", "cpu", "fp32"),))
    rows = bench_variant(v, ["torch-eager"], ["fp32"], BenchSettings(device="cpu", time_latency=False), [es])
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["batch"] is None
    assert rows[0]["accuracy"] == 0.8125 and "reused from compress" in rows[0]["accuracy_source"]


def test_int8_and_int4_linear_numerics_on_cpu() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 128)
    x = torch.randn(24, 256)
    ref = lin(x)
    rel = lambda a: ((a - ref).norm() / ref.norm()).item()  # noqa: E731
    assert rel(Int8Linear(lin)(x)) < 0.02
    q4 = Int4WeightOnlyLinear(lin)
    assert rel(q4(x)) < 0.10  # 4-bit groups of 128 on uniform weights: ~6 % error
    deq = x.bfloat16().float() @ q4.dequantized_weight().t() + lin.bias
    assert ((q4(x) - deq).norm() / deq.norm()).item() < 0.01  # kernel == tinygemm formula


def test_linear_replacement_keeps_classifier_output_float() -> None:
    model = tiny_classifier(hidden=128)
    ids = torch.randint(5, 300, (20, 16))
    ref = model(input_ids=ids).logits
    m8 = tiny_classifier(hidden=128)
    rep = quantize_linears_int8_(m8, Int8Config())
    assert "classifier.out_proj" in rep.kept and len(rep.replaced) == 2 * 6 + 1
    assert ((m8(input_ids=ids).logits - ref).norm() / ref.norm()).item() < 0.05
    m4 = tiny_classifier(hidden=128)
    rep4 = quantize_linears_int4_(m4, Int4Config())
    assert len(rep4.replaced) == 2 * 6 + 1  # every K is a multiple of 128 at hidden 128
    assert ((m4(input_ids=ids).logits - ref).norm() / ref.norm()).item() < 0.25


class PooledClassifier(torch.nn.Module):
    """A classifier with few enough ops that inductor's cold compile on CPU stays cheap (a handful of kernels)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(300, 16)
        self.out = torch.nn.Linear(16, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):  # noqa: ANN201
        m = attention_mask.unsqueeze(-1).to(self.emb.weight.dtype)
        pooled = (torch.tanh(self.emb(input_ids)) * m).sum(1) / m.sum(1)
        return types.SimpleNamespace(logits=self.out(pooled))


def test_torch_compile_matches_eager_logits_on_this_device(one_thread: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch-compile has a CPU path (inductor's default mode) as well as CUDA graphs: run it wherever we are,
    on a model small enough that inductor compiles it in seconds (one compile worker: no pool to start)."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "compile_threads", 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = PooledClassifier()
    ids = np.random.default_rng(0).integers(5, 300, (4, 16))
    mask = np.ones_like(ids)
    mask[1, 10:] = 0
    ref_b = get_backend("torch-eager", device=device)
    ref_b.load(model)
    ref = ref_b.run(ids, mask)
    b = get_backend("torch-compile", device=device)
    b.load(model)
    out = b.run(ids, mask)
    assert b.describe()["compile_mode"] == ("reduce-overhead" if device == "cuda" else "default")
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-3
    b.close()


@pytest.mark.gpu
@pytest.mark.parametrize("backend,tol", [("torch-int8", 0.05), ("torch-int4", 0.25), ("torch-compile", 1e-3)])
def test_cuda_backends_match_fp32_logits(backend: str, tol: float) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = tiny_classifier(hidden=128)
    ids = np.random.default_rng(0).integers(5, 300, (32, 32))
    mask = np.ones_like(ids)
    ref_b = get_backend("torch-eager", device="cuda")
    ref_b.load(model)
    ref = ref_b.run(ids, mask)
    b = get_backend(backend, device="cuda")
    b.load(model)
    out = b.run(ids, mask)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < tol
    rows = bench_variant(Variant("t", model, vocab_size=300), [backend], ["fp32"], BenchSettings(batches=[1, 32], seq_len=32, device="cuda", runs=3))
    assert all(r["status"] == "ok" and r["peak_mem_bytes"] > 0 for r in rows), rows


def test_cli_last_line_is_json(work: dict) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runtime_bench", str(work["onnx"]), "--batch", "1", "2", "--seq", "8",
         "--runs", "2", "--warmup", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["batch"] for r in out["rows"]] == [1, 2]
    assert all(r["status"] == "ok" and r["latency_ms_p50"] > 0 for r in out["rows"])
    assert out["environment"]["onnxruntime"]


RECIPE = """\
name: benchtest
data: {{sources: [{{kind: text, path: "c.txt"}}], max_seq_len: 32}}
models: {{sizes: [{{layers: 2, hidden: 64, heads: 2}}]}}
pretrain: {{time_budget_s: 1}}
finetune: {{task: {{kind: csv, path: task.csv}}, max_length: 24}}
compress: {{quantize: {{bits: [4]}}, prune: {{sparsity: [0.5], step: 0.5}}}}
export: {{formats: [onnx-fp32, tensorrt-int8], sparsity: []}}
bench: {{backends: [torch-eager, torch-int8, onnxruntime, tensorrt], batch_sizes: [2], seq_len: 16, warmup: 1, runs: 2, threads: 1}}
"""


def _fake_run(root: Path, work: dict) -> StageContext:
    from tlc_export.compress.artifact import save_artifact

    (root / "c.txt").write_text("x")
    with open(root / "task.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for e in examples(200, 4):
            w.writerow([e.text, e.label])
    recipe = parse_recipe(RECIPE.format(), base_dir=root)
    run = root / "run"
    work["tok"].save_pretrained(run / "finetune" / SIZE / "model")
    comp = []
    for sp, bits in ((0.0, 32), (0.5, 4)):
        name = f"{SIZE}.s{round(sp * 100):02d}.b{bits}"
        rel = f"compress/{SIZE}/variants/{name}.safetensors"
        save_artifact(run / rel, work["model"], None, None, {"variant": name})
        comp.append({"variant": name, "model": SIZE, "params": 100_000, "sparsity": sp, "bits": bits, "artifact": rel,
                     "storage_bytes": 400_000 if bits == 32 else 30_000, "packed_code_bytes": None,
                     "nonzero_params": 100_000, "nonzero_bits": 100_000 * bits, "fp32_bytes": 400_000,
                     "dev_accuracy": 0.61, "test_accuracy": 0.59})
    (run / "compress").mkdir(parents=True, exist_ok=True)
    (run / "compress" / "results.json").write_text(json.dumps(comp))
    onnx_rel = f"export/{SIZE}/{SIZE}.s00.b32/onnx-fp32.onnx"
    (run / onnx_rel).parent.mkdir(parents=True)
    (run / onnx_rel).write_bytes(work["onnx"].read_bytes())
    exp = [{"variant": f"{SIZE}.s00.b32", "model": SIZE, "format": "onnx-fp32", "path": onnx_rel, "file_bytes": 1,
            "storage_bytes": 400_000, "status": "ok", "reason": None, "dev_accuracy_onnx": None},
           {"variant": f"{SIZE}.s00.b32", "model": SIZE, "format": "tensorrt-int8", "path": None,
            "status": "unavailable", "reason": "tensorrt is not installed"}]
    (run / "export").mkdir(parents=True, exist_ok=True)
    (run / "export" / "results.json").write_text(json.dumps(exp))
    (run / "bench").mkdir()
    return StageContext(family=ClassificationFamily(), recipe=recipe, run_dir=RunDir(run), out_dir=run / "bench", inputs={}, console=Console(quiet=True))


def test_bench_stage_on_a_fabricated_run(tmp_path: Path, work: dict) -> None:
    ctx = _fake_run(tmp_path, work)
    out = BenchStage().run(ctx)
    rows = [json.loads(line) for line in (ctx.out_dir / "results.jsonl").read_text().splitlines()]
    assert out["rows"] == len(rows)
    by = {(r["variant"], r["backend"], r["format"]): r for r in rows}
    dense_t = by[(f"{SIZE}.s00.b32", "torch-eager", "torch")]
    assert dense_t["status"] == "ok" and dense_t["latency_ms_p50"] > 0 and dense_t["batch"] == 2
    assert dense_t["dev_accuracy"] == 0.61 and "reused" in dense_t["accuracy_source"]  # same torch fp32 computation
    sparse_t = by[(f"{SIZE}.s50.b4", "torch-eager", "torch")]
    assert sparse_t["batch"] is None and sparse_t["latency_ms_p50"] is None and sparse_t["dev_accuracy"] == 0.61
    ort = by[(f"{SIZE}.s00.b32", "onnxruntime", "onnx-fp32")]
    assert ort["status"] == "ok" and "measured" in ort["accuracy_source"] and ort["test_accuracy"] is not None
    assert by[(f"{SIZE}.s00.b32", "tensorrt", "tensorrt-int8")]["status"] == "unavailable"
    if not torch.cuda.is_available():
        assert by[(f"{SIZE}.s00.b32", "torch-int8", "torch")]["status"] == "unavailable"
    with open(ctx.out_dir / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert json.loads((ctx.out_dir / "environment.json").read_text())["cpu"]
    # A rerun in the same folder resumes: finished groups are kept, not measured again.
    BenchStage().run(ctx)
    again = [json.loads(line) for line in (ctx.out_dir / "results.jsonl").read_text().splitlines()]
    assert [r["latency_ms_p50"] for r in again] == [r["latency_ms_p50"] for r in rows]


def test_int4_linear_keeps_no_second_copy_of_the_codes_on_the_device() -> None:
    """Only the packed weight is a buffer (what .to('cuda') moves); the codes stay on the host."""
    torch.manual_seed(0)
    q4 = Int4WeightOnlyLinear(torch.nn.Linear(256, 128))
    buffers = dict(q4.named_buffers())
    assert "codes" not in buffers and "packed" in buffers
    x = torch.randn(4, 256)
    before = q4(x)
    q4.to(torch.float16)  # re-packs from the host codes; scales stay bf16
    assert q4.scales_and_zeros.dtype == torch.bfloat16 and q4.codes.device.type == "cpu"
    assert torch.allclose(q4(x), before, atol=1e-3)


class _FakeClock:
    """Nanoseconds that advance only when a timed call runs (`tick`): no test reads the real clock."""

    def __init__(self, step_ns: int) -> None:
        self.now, self.step = 0, step_ns

    def __call__(self) -> int:
        return self.now

    def tick(self) -> None:
        self.now += self.step


def test_interleaved_turns_settle_rotate_and_drop_warmup_rounds():
    """Each turn starts with `settle_s` of untimed calls (another session's spinning threads settle), then
    `turn_s` of timed ones (at least `min_per_turn`); turns rotate by one per round, and warm-up rounds are
    not kept. Calls of 0.5 ms on a fake clock: a 1 ms settle is 2 calls, a 1.5 ms turn 3 timed ones."""
    from runtime_bench.metrics import interleaved_turns

    clock = _FakeClock(500_000)
    log: list[str] = []
    calls = {k: (lambda k=k: (log.append(k), clock.tick())) for k in "abc"}
    samples = interleaved_turns(calls, rounds=2, warmup_rounds=1, settle_s=1e-3, turn_s=1.5e-3, min_per_turn=2,
                                clock=clock)
    assert "".join(log) == "".join(k * 5 for k in "abc" + "bca" + "cab")
    assert samples == {k: [0.5] * 6 for k in "abc"}


def test_interleaved_turns_keep_rounds_apart_for_pairing():
    """`turns` gets each kept turn's samples, one list per round and call, the same samples as the flat lists;
    a turn shorter than `min_per_turn` calls still times that many."""
    from runtime_bench.metrics import interleaved_turns

    clock = _FakeClock(1_000_000)
    calls = {"a": clock.tick, "b": lambda: (clock.tick(), clock.tick())}  # b takes twice as long
    turns: dict[str, list[list[float]]] = {}
    samples = interleaved_turns(calls, rounds=3, warmup_rounds=1, settle_s=0.0, turn_s=0.0, min_per_turn=2,
                                clock=clock, turns=turns)
    assert turns == {"a": [[1.0, 1.0]] * 3, "b": [[2.0, 2.0]] * 3}
    assert {k: [x for t in v for x in t] for k, v in turns.items()} == samples


def test_paired_ratios_divide_within_rounds_and_decide_on_the_interval():
    """A file twice as slow as the base in every round reads 2.0 however much the rounds differ (a load burst
    slows both sides of a round alike); the bench's target reads the interval, not the point."""
    from runtime_bench.metrics import paired_ratios
    from runtime_bench.own_codes_speed import target

    base = [[1.0, 1.2, 1.1], [5.0, 5.0, 5.0], [0.9, 1.0, 1.1], [2.0, 2.2, 2.1], [1.0, 1.0, 1.0], [3.0, 3.0, 3.0]]
    turns = {"base": base, "slow": [[2 * x for x in t] for t in base], "same": base}
    got = paired_ratios(turns, "base")
    assert got["slow"][0] == 2.0 and got["same"][0] == 1.0
    # six rounds give the widest order-statistic interval, [min, max]: all 2.0 here
    assert got["slow"][1:] == (2.0, 2.0)
    assert target((1.0, 0.98, 1.04), 1.05) == "met"
    assert target((1.1, 1.06, 1.2), 1.05) == "not met"
    assert target((1.04, 0.99, 1.09), 1.05) == "inside the noise"
