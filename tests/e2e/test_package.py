"""`tlc package` and `tlc predict` on the tiny end-to-end run (the session's `tiny_run`, not trained again).

References are built without the code under test: plain onnxruntime on the run's exported files,
transformers' AutoConfig/AutoTokenizer, Triton's own ModelConfig protobuf (from tritonclient), the
report's rendered summary.md, and accuracies computed here from the JSONL that `tlc predict` wrote.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from tlc_export import integrity
from tlc_export.cli import main

pytestmark = pytest.mark.slow
B32 = "2L-64H.s00.b32"


def _text(result) -> str:
    return " ".join(result.output.split())  # rich wraps long messages


def _package(tiny_run, *args: str):
    return CliRunner().invoke(main, ["package", str(tiny_run.run_dir), *args])


def _ort(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def _export_row(run_dir: Path, variant: str, fmt: str) -> dict:
    rows = json.loads((run_dir / "export" / "results.json").read_text())
    rows = rows["artifacts"] if isinstance(rows, dict) else rows
    return next(r for r in rows if r["variant"] == variant and r["format"] == fmt)


def _model_config_pb2():
    """Triton's ModelConfig protobuf as tritonclient ships it (its grpc package __init__ needs grpcio, so
    the generated module is loaded from its file)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tritonclient is not installed (pip install -e '.[dev]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fp32_bundle(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "fp32"
    result = _package(tiny_run, "--variant", B32, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_bundle_loads_with_plain_onnxruntime_and_transformers(tiny_run, fp32_bundle: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    b = fp32_bundle
    for name in ("model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "tlc.json", "README.md"):
        assert (b / name).is_file(), name
    cfg = AutoConfig.from_pretrained(str(b))
    assert cfg.id2label == {0: "neg", 1: "pos"} and cfg.label2id == {"neg": 0, "pos": 1}
    assert json.loads((b / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    tok = AutoTokenizer.from_pretrained(str(b))
    ref_tok = AutoTokenizer.from_pretrained(str(tiny_run.run_dir / "finetune" / "2L-64H" / "model"))
    texts = ["the film was really charming", "boring plot and dull music and a story", "a"]
    enc = tok(texts, padding=True, truncation=True, max_length=24, return_tensors="np")
    ref = ref_tok(texts, padding=True, truncation=True, max_length=24, return_tensors="np")
    np.testing.assert_array_equal(enc["input_ids"], ref["input_ids"])
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    exported = tiny_run.run_dir / _export_row(tiny_run.run_dir, B32, "onnx-fp32")["path"]
    np.testing.assert_array_equal(_ort(b / "model.onnx", ids, mask), _ort(exported, ids, mask))
    meta = json.loads((b / "tlc.json").read_text())
    comp = json.loads((tiny_run.run_dir / "compress" / "results.json").read_text())
    comp = {r["variant"]: r for r in (comp["variants"] if isinstance(comp, dict) else comp)}
    assert meta["variant"] == B32 and meta["format"] == "onnx-fp32" and meta["selection"] == {"by": "variant"}
    assert meta["storage_bytes"] == comp[B32]["storage_bytes"]
    assert meta["graph_optimization"]["applied"] and meta["graph_optimization"]["fusions"]["Attention"] == 2
    assert meta["run"]["recipe_hash"] == json.loads((tiny_run.run_dir / "manifest.json").read_text())["recipe_hash"]
    assert meta["latency"] and all(r["backend"] == "onnxruntime" for r in meta["latency"])
    assert meta["self_check"]["max_abs_diff"] == 0.0
    # accuracy of the shipped file: the bench's ONNX Runtime row, with its 95 % Wilson interval over the split
    bench = [json.loads(x) for x in (tiny_run.run_dir / "bench" / "results.jsonl").read_text().splitlines()]
    row = next(r for r in bench if r["variant"] == B32 and r["format"] == "onnx-fp32" and r["status"] == "ok")
    test = meta["accuracy"]["test"]
    n = _test_split_csv(tiny_run, tmp_path / "test.csv", "test")
    assert test["accuracy"] == row["test_accuracy"] and test["n"] == n
    k, z = round(test["accuracy"] * n), 1.959964
    p, d = k / n, 1 + z * z / n
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / d
    np.testing.assert_allclose(test["ci"], [max(0.0, (p + z * z / (2 * n)) / d - half), min(1.0, (p + z * z / (2 * n)) / d + half)],
                               atol=1e-6)
    assert meta["variant_accuracy"]["test"]["accuracy"] == comp[B32]["test_accuracy"]


def test_triton_config_parses_and_matches_the_graph(fp32_bundle: Path) -> None:
    from google.protobuf import text_format

    pb = _model_config_pb2()
    meta = json.loads((fp32_bundle / "tlc.json").read_text())
    repo = fp32_bundle / "triton" / meta["name"]
    cfg = text_format.Parse((repo / "config.pbtxt").read_text(), pb.ModelConfig())
    assert cfg.name == meta["name"] == repo.name and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 32 and cfg.HasField("dynamic_batching")
    assert (repo / "1" / "model.onnx").read_bytes() == (fp32_bundle / "model.onnx").read_bytes()
    graph = onnx.load(str(repo / "1" / "model.onnx")).graph
    inits = {i.name for i in graph.initializer}
    triton_type = {onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.FLOAT: "TYPE_FP32"}

    def expect(vis):
        out = []
        for vi in vis:
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim][1:]
            out.append((vi.name, triton_type[vi.type.tensor_type.elem_type], dims))
        return out

    got_in = [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in cfg.input]
    got_out = [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in cfg.output]
    assert got_in == expect([i for i in graph.input if i.name not in inits])
    assert got_out == expect(graph.output) == [("logits", "TYPE_FP32", [2])]
    assert [n for n, _, _ in got_in] == ["input_ids", "attention_mask"]


def _report_answers(tiny_run, tmp_path: Path, storage: list[float], latency: list[float]) -> tuple[list[str], list[tuple]]:
    """Variants the rendered report names for these budgets (parsed from its summary.md)."""
    from tlc_export.report import build_report, load_report_data

    build_report(load_report_data(tiny_run.run_dir), tmp_path, storage, latency)
    md = (tmp_path / "summary.md").read_text()

    def table(title: str) -> list[dict[str, str]]:
        lines: list[str] = []
        for ln in md[md.index(title):].splitlines()[1:]:
            if ln.startswith("|"):
                lines.append(ln)
            elif lines:
                break
        head = [c.strip() for c in lines[0].strip("|").split("|")]
        return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[2:]]

    name = "variant (chosen on dev)"
    st = [r[name] for r in table("## Best variant per storage budget")]
    lat = [(r[name], r["format"], r["backend"]) for r in table("## Best (variant, backend) per p50 latency budget")]
    return st, lat


def test_budget_selection_equals_the_report_answer_table(tiny_run, tmp_path: Path) -> None:
    comp = json.loads((tiny_run.run_dir / "compress" / "results.json").read_text())
    sizes = sorted(r["storage_bytes"] / 1e6 for r in (comp["variants"] if isinstance(comp, dict) else comp))
    storage = [sizes[0] * 1.01, sizes[len(sizes) // 2] * 1.01, sizes[-1] * 1.01]
    bench = [json.loads(x) for x in (tiny_run.run_dir / "bench" / "results.jsonl").read_text().splitlines()]
    lat_ms = sorted(r["latency_ms_p50"] for r in bench if r["status"] == "ok" and r.get("latency_ms_p50"))
    latency = [lat_ms[0] * 1.01, lat_ms[len(lat_ms) // 2] * 1.01, lat_ms[-1] * 1.01]
    want_storage, want_latency = _report_answers(tiny_run, tmp_path / "report", storage, latency)
    assert len(want_storage) == len(want_latency) == 3
    out = tmp_path / "never-written"
    for budget, want in zip(storage, want_storage, strict=True):
        r = _package(tiny_run, "--max-storage-mb", repr(budget), "--out", str(out), "--dry-run")
        assert r.exit_code == 0, r.output
        assert f"would package {want} (" in _text(r)
    for budget, (variant, fmt, backend) in zip(latency, want_latency, strict=True):
        r = _package(tiny_run, "--max-latency-ms", repr(budget), "--out", str(out), "--dry-run")
        if backend == "onnxruntime":
            assert r.exit_code == 0 and f"would package {variant} ({fmt})" in _text(r), r.output
        else:  # the report names a torch row: no bundle can ship it, and the error says how to choose an ORT row
            assert r.exit_code != 0 and "--backend onnxruntime" in _text(r), r.output
    assert not out.exists()


def test_storage_budget_packages_the_answer_exporting_it_when_needed(tiny_run, tmp_path: Path) -> None:
    """The answer for the smallest budget is a pruned 4-bit variant that the recipe did not export
    (export.sparsity: []): it is exported into the run's package/ cache, never into export/."""
    comp = json.loads((tiny_run.run_dir / "compress" / "results.json").read_text())
    comp = comp["variants"] if isinstance(comp, dict) else comp
    want, _ = _report_answers(tiny_run, tmp_path / "report", [min(r["storage_bytes"] for r in comp) / 1e6 * 1.01], [1.0])
    export_before = (tiny_run.run_dir / "export" / "results.json").read_bytes()
    out = tmp_path / "b"
    r = _package(tiny_run, "--max-storage-mb", repr(min(r["storage_bytes"] for r in comp) / 1e6 * 1.01), "--out", str(out))
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "tlc.json").read_text())
    assert meta["variant"] == want[0] and meta["format"] == "onnx-int4"
    assert meta["selection"]["by"] == "max_storage_mb" and meta["selection"]["exported_on_demand"]
    assert meta["model_file"]["source"].startswith("package/export/")
    assert (tiny_run.run_dir / "export" / "results.json").read_bytes() == export_before
    pred = CliRunner().invoke(main, ["predict", str(out), "charming and brilliant", "--jsonl"])
    assert pred.exit_code == 0, pred.output
    line = json.loads(pred.output.strip().splitlines()[-1])
    assert line["label"] in ("neg", "pos") and abs(sum(line["probabilities"].values()) - 1) < 1e-5
    # The shipped file's own accuracy on both splits (no bench row exists for an on-demand export), and
    # `tlc predict` on the test split reproduces the recorded test accuracy.
    assert set(meta["accuracy"]) == {"dev", "test"}
    n = _test_split_csv(tiny_run, tmp_path / "test.csv", "test")
    res = CliRunner().invoke(main, ["predict", str(out), "--file", str(tmp_path / "test.csv"), "--text-column", "review",
                                    "--output", str(tmp_path / "p.jsonl")])
    assert res.exit_code == 0, res.output
    got = [json.loads(x)["label"] for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    with open(tmp_path / "test.csv", newline="") as f:
        gold = [r["gold"] for r in csv.DictReader(f)]
    assert len(got) == len(gold) == n
    assert sum(a == b for a, b in zip(got, gold, strict=True)) / n == meta["accuracy"]["test"]["accuracy"]


def _test_split_csv(tiny_run, path: Path, split: str) -> int:
    from tlc_export.data import load_task
    from tlc_export.recipe import parse_recipe

    recipe = parse_recipe((tiny_run.run_dir / "recipe.resolved.yaml").read_text(), base_dir=tiny_run.root)
    task = load_task(recipe.finetune.task, recipe)
    examples = getattr(task, split)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "gold"])
        for e in examples:
            w.writerow([e.text, task.label_names[e.label]])
    return len(examples)


@pytest.mark.parametrize("fmt", ["onnx-fp32", "onnx-int8-dynamic"])
def test_predict_on_a_csv_reproduces_the_bench_accuracy(tiny_run, fp32_bundle: Path, tmp_path: Path, fmt: str) -> None:
    """Dynamic INT8 quantizes activations per batch: equal accuracy needs the bench to batch as predict does."""
    bench = [json.loads(x) for x in (tiny_run.run_dir / "bench" / "results.jsonl").read_text().splitlines()]
    row = next(r for r in bench if r["variant"] == B32 and r["format"] == fmt and r["status"] == "ok")
    split = "test" if row.get("test_accuracy") is not None else row["accuracy_split"]
    n = _test_split_csv(tiny_run, tmp_path / "split.csv", split)
    bundle = fp32_bundle
    if fmt != "onnx-fp32":
        bundle = tmp_path / "bundle"
        assert _package(tiny_run, "--variant", B32, "--format", fmt, "--out", str(bundle)).exit_code == 0
    out = tmp_path / "pred.jsonl"
    r = CliRunner().invoke(main, ["predict", str(bundle), "--file", str(tmp_path / "split.csv"), "--text-column", "review",
                                  "--label-column", "gold", "--output", str(out)])
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == n and all(set(x["probabilities"]) == {"neg", "pos"} for x in recs)
    accuracy = sum(x["label"] == x["gold_label"] for x in recs) / n
    assert accuracy == row[f"{split}_accuracy"]
    assert f"accuracy {100 * accuracy:.2f} %" in _text(r)


def test_predict_does_not_import_torch(fp32_bundle: Path) -> None:
    code = ("import sys\nfrom tlc_export.cli import main\n"
            f"try:\n    main(['predict', {str(fp32_bundle)!r}, 'a charming film', '--jsonl'])\n"
            "except SystemExit as e:\n    assert e.code in (None, 0), e.code\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
            "print('IMPORTED', bad)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout and '"label"' in proc.stdout


def test_bad_inputs_fail_clearly_and_leave_out_untouched(tiny_run, tmp_path: Path) -> None:
    new = tmp_path / "new"
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    no_report = tmp_path / "no-report"
    shutil.copytree(tiny_run.run_dir, no_report, ignore=shutil.ignore_patterns("report", "pretrain", "data"))
    manifest = json.loads((no_report / "manifest.json").read_text())
    del manifest["stages"]["report"]
    (no_report / "manifest.json").write_text(json.dumps(manifest))
    cases = [
        (["--variant", "9L-9H.s00.b32", "--out", str(new)], "unknown variant '9L-9H.s00.b32'; this run has: 1L-64H.s00.b32"),
        (["--variant", B32, "--format", "tensorrt-int8", "--out", str(new)], "tensorrt-int8: export status 'unavailable'"),
        (["--variant", "2L-64H.s00.b8", "--format", "onnx-int4", "--out", str(new)], "has no onnx-int4 file"),
        (["--variant", B32, "--out", str(full)], "--out"),
        (["--variant", B32, "--max-storage-mb", "1", "--out", str(new)], "exactly one of"),
        (["--max-storage-mb", "0.000001", "--out", str(new)], "no variant fits"),
    ]
    for args, message in cases:
        r = _package(tiny_run, *args)
        assert r.exit_code != 0, (args, r.output)
        assert message in _text(r), (args, r.output)
    assert "pass --force" in _text(_package(tiny_run, "--variant", B32, "--out", str(full)))
    assert "exported for it" in _text(_package(tiny_run, "--variant", "2L-64H.s00.b8", "--format", "onnx-int4", "--out", str(new)))
    r = CliRunner().invoke(main, ["package", str(no_report), "--variant", B32, "--out", str(new)])
    assert r.exit_code != 0 and "has no report; run `tlc report" in _text(r), r.output
    assert not new.exists()
    assert [p.name for p in full.iterdir()] == ["keep.txt"] and (full / "keep.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".new.*")) and not list(tmp_path.glob(".full.*"))  # no temporary left behind
    # --force replaces the folder as a whole
    r = _package(tiny_run, "--variant", B32, "--out", str(full), "--force")
    assert r.exit_code == 0, r.output
    assert not (full / "keep.txt").exists() and (full / "tlc.json").is_file()


def test_predict_errors_name_the_file(fp32_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bad)
    cases = []
    r = CliRunner().invoke(main, ["predict", str(tmp_path / "missing"), "x"])
    cases.append((r, "no such bundle folder"))
    (bad / "model.onnx").write_bytes(b"not an onnx file")
    r = CliRunner().invoke(main, ["predict", str(bad), "x"])
    cases.append((r, f"{bad / 'model.onnx'}: 16 bytes, but tlc.json records"))
    meta = json.loads((bad / "tlc.json").read_text())
    meta["model_file"].update(bytes=16, sha256=None)  # a damaged file the record does not catch: ONNX Runtime does
    (bad / "tlc.json").write_text(json.dumps(meta))
    r = CliRunner().invoke(main, ["predict", str(bad), "x"])
    cases.append((r, f"{bad / 'model.onnx'}: ONNX Runtime cannot load it"))
    (bad / "config.json").write_text("{broken")
    r = CliRunner().invoke(main, ["predict", str(bad), "x"])
    cases.append((r, f"{bad / 'config.json'}: not valid JSON"))
    (tmp_path / "in.csv").write_text("sentence\nhello\n")
    r = CliRunner().invoke(main, ["predict", str(fp32_bundle), "--file", str(tmp_path / "in.csv")])
    cases.append((r, "no column 'text' (columns: 'sentence'); pass --text-column"))
    for result, message in cases:
        assert result.exit_code != 0 and message in _text(result), result.output


def test_tensorrt_engine_refused_on_another_gpu_unless_forced(tiny_run, tmp_path: Path, monkeypatch) -> None:
    import tlc_export.package.gpu as gpu

    monkeypatch.setattr(gpu, "current_gpu", lambda: {"name": "NVIDIA L4", "compute_capability": "8.9"})
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run, ignore=shutil.ignore_patterns("pretrain", "data"))
    rows = json.loads((run / "export" / "results.json").read_text())
    row = next(r for r in rows if r["variant"] == B32 and r["format"] == "tensorrt-int8")
    engine = run / "export" / "2L-64H" / B32 / "tensorrt-int8.engine"
    engine.write_bytes(b"serialized engine bytes")
    row.update(status="ok", reason=None, path=str(engine.relative_to(run)), tensorrt_version="10.13.0",
               gpu={"name": "NVIDIA H200", "compute_capability": "9.0"},
               trt_profiles=[{"min": [1, 1], "opt": [8, 32], "max": [8, 32]}])
    assert (run / row["onnx_path"]).is_file()
    (run / "export" / "results.json").write_text(json.dumps(rows))
    integrity.record_stage(run / "export", "export")  # as the export stage would have, with the engine
    out = tmp_path / "b"
    r = CliRunner().invoke(main, ["package", str(run), "--variant", B32, "--format", "tensorrt-int8", "--out", str(out)])
    assert r.exit_code != 0 and "--allow-other-gpu" in _text(r), r.output
    assert "built on NVIDIA H200 (sm 9.0) but this machine has NVIDIA L4 (sm 8.9)" in _text(r)
    assert not out.exists()
    r = CliRunner().invoke(main, ["package", str(run), "--variant", B32, "--format", "tensorrt-int8", "--out", str(out),
                                  "--allow-other-gpu"])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "tlc.json").read_text())
    repo = out / "triton" / meta["name"]
    assert (repo / "1" / "model.plan").read_bytes() == b"serialized engine bytes"
    assert (out / "model.onnx").read_bytes() == (run / row["onnx_path"]).read_bytes()
    text = (repo / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in text and "max_batch_size: 8" in text and "KIND_GPU" in text
    assert meta["tensorrt"]["tensorrt_version"] == "10.13.0" and meta["tensorrt"]["gpu_check"].startswith("forced")
    assert meta["tensorrt"]["built_on_gpu"]["name"] == "NVIDIA H200"


def test_large_models_use_external_data(tiny_run, tmp_path: Path) -> None:
    from tlc_export.tasks.classification.package.bundle import write_bundle
    from tlc_export.tasks.classification.package.select import choose

    choice = choose(tiny_run.run_dir, variant=B32)
    out = tmp_path / "ext"
    write_bundle(tiny_run.run_dir, choice, out, external_data_bytes=1)  # as if the weights were > 2 GB
    assert (out / "model.onnx.data").is_file() and (out / "triton" / "2L-64H_s00_b32" / "1" / "model.onnx.data").is_file()
    assert (out / "model.onnx").stat().st_size < (out / "model.onnx.data").stat().st_size
    ids = np.array([[0, 7, 9, 11, 2], [0, 5, 2, 1, 1]], dtype=np.int64)
    mask = (ids != 1).astype(np.int64)
    exported = tiny_run.run_dir / choice.export["path"]
    np.testing.assert_array_equal(_ort(out / "model.onnx", ids, mask), _ort(exported, ids, mask))


def test_readme_snippet_without_tlc_classifies_as_predict(fp32_bundle: Path) -> None:
    """The bundle README's plain-Python snippet (onnxruntime + tokenizers, no tlc) runs as written, in the bundle
    folder, and prints for its two example texts the labels `tlc predict` gives them."""
    blocks = (fp32_bundle / "README.md").read_text().split("```python\n")
    plain = next(b.split("```")[0] for b in blocks[1:] if "import onnxruntime" in b)
    assert "tlc_export" not in plain and "SkipLayerNormFusion" in plain
    proc = subprocess.run([sys.executable, "-c", plain], cwd=fp32_bundle, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = [line.split(" ", 1)[0] for line in proc.stdout.splitlines()]
    texts = ["a gorgeous, witty, seductive movie.", "dull and far too long."]
    assert all(f'"{t}"' in plain for t in texts)
    r = CliRunner().invoke(main, ["predict", str(fp32_bundle), *texts, "--jsonl"])
    assert r.exit_code == 0, r.output
    want = [json.loads(x)["label"] for x in r.output.splitlines() if x.startswith("{")]
    assert got == want and len(want) == 2
