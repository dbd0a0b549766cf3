"""`tlc package` / `tlc predict` for translation runs, on a run directory built here (nothing trained).

The run holds a tiny MarianMTModel (fitted for a few seconds, so that its translations depend on the input) exported with `export_translation_onnx`, its tokenizer, and
translation / compress / export / bench rows in the contract's layout. References are independent of
the code under test: hashlib for checksums, the source files byte for byte, and plain transformers'
greedy `generate` + `batch_decode` for the translations.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tlc_export.cli import main
from tlc_export.compress.variants import variant_name
from tlc_export.recipe import parse_recipe
from tlc_export.rundir import RESOLVED_RECIPE, RunDir, StageRecord
from tlc_export.tasks.classification.package.select import PackageError
from tlc_export.tasks.translation.data import ParallelPair
from tlc_export.tasks.translation.model import build_translation_model
from tlc_export.tasks.translation.onnx import export_translation_onnx
from tlc_export.tasks.translation.package.select import choose_translation
from tlc_export.tasks.translation.tokenizer import EOS_ID, PAD_ID, train_tokenizers

RECIPE = """\
name: micro-mt
translation:
  data: {kind: tsv, path: pairs.tsv}
  tokenizer: {vocab_size: 300, min_frequency: 1}
  sizes: [{layers: 2, hidden: 32, decoder_layers: 1, heads: 2, ffn: 64}]
  dropout: 0.0
  max_source_length: 16
  max_target_length: 16
  train: {time_budget_s: 1}
  decoding: {strategy: beam, num_beams: 2, max_length: 14}
"""
WORDS = ["cat", "dog", "bird", "man", "woman", "child"]
PAIRS = [ParallelPair(f"the {a} sees the {b}", f"le {a} voit le {b}", f"{a}-{b}") for a in WORDS for b in WORDS]
GENESIS = "In the beginning God created the heavens and the earth."
SENTENCES = [GENESIS, "the cat sees the dog", "", "the child", "a much longer sentence, never seen before, with "
             "many words that the source side truncates at sixteen tokens for sure"]


def _variant(bits: int) -> str:
    return variant_name("2L1D-32H", 0, bits)


def _write_predictions(path: Path, refs: list[str], hyps: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {split: {"sources": [f"s{i}" for i in range(len(refs))], "references": refs, "hypotheses": hyps}
            for split in ("dev", "test")}
    path.write_text(json.dumps(data))
    return str(path)


def _fit(model, tok, steps: int = 300):
    """A few optimizer steps on the pairs, so translations depend on the input (a fresh model's do not)."""
    enc = tok.source([p.source for p in PAIRS], padding=True, return_tensors="pt")
    labels = tok.target([p.target for p in PAIRS], padding=True, return_tensors="pt")["input_ids"]
    labels[labels == PAD_ID] = -100
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        model(**enc, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory) -> dict:
    """A translation run directory: one real fp32 export, and rows for three variants of the size."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mt") / "run"
    root.mkdir()
    (root / RESOLVED_RECIPE).write_text(RECIPE)
    cfg = parse_recipe(RECIPE).translation
    rd = RunDir(root)
    rd.set_meta(recipe_name="micro-mt", recipe_hash="feedbeef", recipe_base_dir=str(root))
    for stage in ("translation", "compress", "export", "bench"):
        rd.save_record(StageRecord(stage, status="done", cache_key=f"key-{stage}", finished_at=1.0))

    tok = train_tokenizers(PAIRS, cfg.tokenizer)
    tok.save(root / "translation" / "tokenizer")
    model = _fit(build_translation_model(cfg.grid()[0], cfg, len(tok.source), seed=3), tok)
    b32, b8, b4 = _variant(32), _variant(8), _variant(4)
    fp32_dir = root / "export" / b32 / "onnx-fp32"
    export_translation_onnx(model, fp32_dir)
    int8_dir = root / "export" / b8 / "onnx-int8"  # a stand-in file pair: selection never reads the weights
    shutil.copytree(fp32_dir, int8_dir)

    refs = [p.target for p in PAIRS[:30]]
    good = _write_predictions(root / "compress/2L1D-32H/variants" / f"{b8}.predictions.json", refs, refs)
    bad = _write_predictions(root / "compress/2L1D-32H/variants" / f"{b4}.predictions.json", refs, ["x"] * len(refs))
    big = _write_predictions(root / "compress/2L1D-32H/variants" / f"{b32}.predictions.json", refs, refs)
    rel = lambda p: str(Path(p).relative_to(root))  # noqa: E731
    scores = {b32: (10.0, 9.0), b8: (9.5, 8.5), b4: (3.0, 2.0)}
    storage = {b32: 4_000_000, b8: 1_000_000, b4: 500_000}
    mt = {"source_lang": "en", "target_lang": "fr", "selection_split": "dev", "report_split": "test",
          "models": [{"model": "2L1D-32H", "checkpoint": "translation/2L1D-32H/checkpoint"}]}
    (root / "translation" / "results.json").write_text(json.dumps(mt))
    sig = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    compress = [{"variant": v, "model": "2L1D-32H", "sparsity": 0.0, "bits": bits, "params": 1234,
                 "storage_bytes": storage[v], "dev_bleu": scores[v][0], "dev_bleu_ci": [scores[v][0] - 1, scores[v][0] + 1],
                 "test_bleu": scores[v][1], "test_bleu_ci": [scores[v][1] - 1, scores[v][1] + 1], "dev_n": 30, "test_n": 30,
                 "bleu_signature": sig, "decoding": "beam", "predictions": rel(p)}
                for v, bits, p in ((b32, 32, big), (b8, 8, good), (b4, 4, bad))]
    (root / "compress" / "results.json").write_text(json.dumps(compress))
    files = sum((fp32_dir / f).stat().st_size for f in ("encoder.onnx", "decoder.onnx"))
    exports = [{"variant": v, "model": "2L1D-32H", "format": fmt, "sparsity": 0.0, "bits": bits, "folder": rel(folder),
                "file_bytes": files, "storage_bytes": storage[v], "status": "ok", "reason": None,
                "validation": {"sentences": 8, "mismatched": [], "equal": True}, "decoding": "greedy",
                "dev_bleu": scores[v][0] - 0.1, "dev_bleu_ci": [8.0, 11.0], "test_bleu": scores[v][1] - 0.1,
                "test_bleu_ci": [7.5, 10.5], "dev_chrf": 30.0, "test_chrf": 29.0, "test_chrf_ci": [27.0, 31.0],
                "dev_n": 30, "test_n": 30, "bleu_signature": sig, "chrf_signature": "chrF2",
                "interval_method": "bootstrap"}
               for v, fmt, bits, folder in ((b32, "onnx-fp32", 32, fp32_dir), (b8, "onnx-int8", 8, int8_dir))]
    exports.append({"variant": b4, "model": "2L1D-32H", "format": "onnx-int4", "bits": 4, "status": "failed",
                    "reason": "int4 kernel missing", "folder": None})
    (root / "export" / "results.json").write_text(json.dumps(exports))
    bench = [{"variant": b32, "model": "2L1D-32H", "backend": "onnxruntime", "format": "onnx-fp32", "batch_size": 1,
              "p50_ms": 20.0, "p90_ms": 25.0, "sentences_per_s": 50.0, "dev_bleu": 9.9, "test_bleu": 8.9},
             {"variant": b8, "model": "2L1D-32H", "backend": "onnxruntime", "format": "onnx-int8", "batch_size": 1,
              "p50_ms": 8.0, "p90_ms": 9.0, "sentences_per_s": 120.0, "dev_bleu": 9.4, "test_bleu": 8.4},
             {"variant": b4, "model": "2L1D-32H", "backend": "torch-eager", "format": "torch", "batch_size": 1,
              "p50_ms": 1.0, "p90_ms": 1.0, "dev_bleu": 12.0, "test_bleu": 11.0}]
    (root / "bench").mkdir()
    (root / "bench" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bench))
    return {"root": root, "model": model, "tok": tok, "cfg": cfg, "fp32_dir": fp32_dir, "exports": exports}


@pytest.fixture(scope="module")
def bundle(mt_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "mt"
    result = CliRunner().invoke(main, ["package", str(mt_run["root"]), "--variant", _variant(32), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "packaged" in result.output and "onnx-fp32" in result.output
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundle_holds_the_export_files_with_matching_checksums_and_fields(mt_run, bundle: Path) -> None:
    meta = json.loads((bundle / "tlc.json").read_text())
    for f in ("encoder.onnx", "decoder.onnx"):
        assert filecmp.cmp(bundle / f, mt_run["fp32_dir"] / f, shallow=False)
    tok_src = mt_run["root"] / "translation" / "tokenizer"
    for f in tok_src.iterdir():
        assert filecmp.cmp(bundle / "tokenizer" / f.name, f, shallow=False)
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"tlc.json", "README.md"}
    assert set(meta["files"]) == on_disk and {"encoder.onnx", "decoder.onnx", "tokenizer/tokenizer.json"} <= on_disk
    for rel, rec in meta["files"].items():
        assert rec == {"bytes": (bundle / rel).stat().st_size, "sha256": _sha256(bundle / rel)}
    row = mt_run["exports"][0]
    assert meta["family"] == "translation" and (meta["source_lang"], meta["target_lang"]) == ("en", "fr")
    assert (meta["variant"], meta["format"], meta["model"], meta["bits"]) == (_variant(32), "onnx-fp32", "2L1D-32H", 32)
    assert meta["file_bytes"] == sum((bundle / f).stat().st_size for f in ("encoder.onnx", "decoder.onnx"))
    assert meta["storage_bytes"] == 4_000_000
    assert meta["bleu"]["test"] == {"bleu": row["test_bleu"], "ci": row["test_bleu_ci"], "n": 30}
    assert meta["bleu"]["dev"]["bleu"] == row["dev_bleu"] and meta["chrf"]["test"]["ci"] == [27.0, 31.0]
    assert meta["variant_bleu"]["test"]["bleu"] == 9.0 and meta["variant_decoding"] == "beam"
    assert meta["bleu_signature"] == row["bleu_signature"]
    assert meta["decoding"] == {"strategy": "greedy", "max_length": 14, "max_source_length": 16, "pad_token_id": PAD_ID,
                                "eos_token_id": EOS_ID, "decoder_start_token_id": PAD_ID}
    assert meta["recipe_decoding"]["strategy"] == "beam" and meta["tokenizer"]["shared"] is True
    # one cached decoder step: the token, the mask, and per layer the cross and self-attention caches
    assert [i["name"] for i in meta["inputs"]["decoder.onnx"]] == ["decoder_input_ids", "attention_mask", "cross_k.0",
                                                                    "cross_v.0", "past_k.0", "past_v.0"]
    assert meta["selection"] == {"by": "variant"} and meta["run"]["cache_keys"]["export"] == "key-export"
    assert meta["self_check"]["equal"] is True and meta["self_check"]["texts"][0] == GENESIS
    readme = (bundle / "README.md").read_text()
    assert "en → fr" in readme and GENESIS in readme and "tokenizer/tokenizer.json" in readme


def test_bundle_translates_as_transformers_greedy_generate(mt_run, bundle: Path) -> None:
    from tlc_export.tasks import open_predictor

    model, tok = mt_run["model"], mt_run["tok"]
    enc = tok.source(SENTENCES, truncation=True, max_length=16, padding=True, return_tensors="pt")
    with torch.inference_mode():
        gen = model.generate(**enc, do_sample=False, num_beams=1, max_length=14, pad_token_id=PAD_ID,
                             eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID)
    want = [t.strip() for t in tok.target.batch_decode(gen, skip_special_tokens=True)]
    assert len({w for w in want if w}) >= 3  # translations differ by input: the comparison can catch a mix-up
    translator = open_predictor(bundle, batch_size=2, threads=1)  # batches of 2: sorting and padding exercised
    assert translator.translate(SENTENCES) == want
    assert translator.translate([]) == []


def test_predict_cli_prints_one_json_line_per_input(mt_run, bundle: Path, tmp_path: Path) -> None:
    from tlc_export.tasks import open_predictor

    result = CliRunner().invoke(main, ["predict", str(bundle), GENESIS, "the cat sees the dog", "--jsonl"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    want = open_predictor(bundle).translate([GENESIS, "the cat sees the dog"])
    assert [r["text"] for r in lines] == [GENESIS, "the cat sees the dog"]
    assert [r["translation"] for r in lines] == want and all(r["translation"] for r in lines)

    txt = tmp_path / "in.txt"
    txt.write_text("the dog sees the cat\n\nthe man\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["predict", str(bundle), "--input", str(txt), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["text"] for x in out.read_text().splitlines()] == ["the dog sees the cat", "the man"]

    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"en": p.source, "fr": p.target}) + "\n" for p in PAIRS[:6]))
    result = CliRunner().invoke(main, ["predict", str(bundle), "--file", str(refs), "--text-column", "en",
                                       "--reference-column", "fr"])
    assert result.exit_code == 0, result.output
    assert "BLEU" in result.output and "tok:13a" in " ".join(result.output.split())
    result = CliRunner().invoke(main, ["predict", str(bundle), GENESIS, "--pair-column", "x"])
    assert result.exit_code != 0 and "--pair-column: not an option of a translation bundle" in result.output


def test_missing_or_changed_file_is_named(bundle: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "decoder.onnx").unlink()
    result = CliRunner().invoke(main, ["predict", str(broken), GENESIS])
    assert result.exit_code != 0
    assert "decoder.onnx: missing" in " ".join(result.output.split())
    shutil.copyfile(bundle / "decoder.onnx", broken / "decoder.onnx")
    with (broken / "tokenizer" / "tokenizer.json").open("a") as f:
        f.write(" ")
    result = CliRunner().invoke(main, ["predict", str(broken), GENESIS])
    assert result.exit_code != 0 and "tokenizer.json" in result.output and "truncated or replaced" in result.output


def test_predict_imports_neither_torch_nor_transformers(bundle: Path) -> None:
    code = ("import sys; from tlc_export.tasks import open_predictor; "
            f"t = open_predictor({str(bundle)!r}, threads=1); print(t.translate(['the cat'])); "
            "bad = [m for m in ('torch', 'transformers', 'pydantic') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_selection_by_storage_and_latency_budget(mt_run) -> None:
    root = mt_run["root"]
    c = choose_translation(root, max_storage_mb=2)  # b8 (dev 9.5) beats b4 (dev 3.0); b32 does not fit
    assert (c.variant, c.format) == (_variant(8), "onnx-int8")
    a = c.selection["answer"]
    assert a["candidates"] == 2 and a["runner_up"] == _variant(4) and a["vs_runner_up"] == "won"
    assert a["test_bleu"] == 8.5 and a["test_bleu_ci"] == [7.5, 9.5]
    assert (choose_translation(root, max_storage_mb=100).variant) == _variant(32)
    with pytest.raises(PackageError, match=r"within 0.6 MB .*have no exported file"):
        choose_translation(root, max_storage_mb=0.6)  # only b4 fits, and its export failed
    with pytest.raises(PackageError, match=r"no variant fits in 0.1 MB; the smallest is .*b4 at 0.5 MB"):
        choose_translation(root, max_storage_mb=0.1)
    c = choose_translation(root, max_latency_ms=10)  # the torch-eager row is faster but cannot ship
    assert (c.variant, c.format) == (_variant(8), "onnx-int8") and c.selection["batch"] == 1
    assert [b["p50_ms"] for b in c.bench] == [8.0]
    with pytest.raises(PackageError, match="the fastest p50 is 8 ms"):
        choose_translation(root, max_latency_ms=1)
    with pytest.raises(PackageError, match=r"onnx-int4: export status 'failed' \(int4 kernel missing\)"):
        choose_translation(root, variant=_variant(4))
    with pytest.raises(PackageError, match="unknown variant 'nope'"):
        choose_translation(root, variant="nope")


def test_package_errors_leave_out_untouched(mt_run, tmp_path: Path) -> None:
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    runner = CliRunner()
    result = runner.invoke(main, ["package", str(mt_run["root"]), "--variant", _variant(32), "--out", str(out)])
    assert result.exit_code != 0 and "folder is not empty" in result.output
    fresh = tmp_path / "c"
    result = runner.invoke(main, ["package", str(mt_run["root"]), "--variant", _variant(32), "--out", str(fresh),
                                  "--max-batch-size", "8"])
    assert result.exit_code != 0 and "--max-batch-size" in result.output and not fresh.exists()
    assert (out / "keep.txt").read_text() == "mine" and [p.name for p in out.iterdir()] == ["keep.txt"]


def test_readme_snippet_without_tlc_translates_as_the_predictor(bundle: Path) -> None:
    from tlc_export.tasks import open_predictor

    blocks = (bundle / "README.md").read_text().split("```python\n")
    plain = next(b.split("```")[0] for b in blocks[1:] if "import onnxruntime" in b)
    assert "tlc_export" not in plain
    proc = subprocess.run([sys.executable, "-c", plain], cwd=bundle, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip("\n") == open_predictor(bundle).translate([GENESIS])[0]


def test_dry_run_names_the_choice_and_writes_nothing(mt_run, tmp_path: Path) -> None:
    out = tmp_path / "dry"
    result = CliRunner().invoke(main, ["package", str(mt_run["root"]), "--max-storage-mb", "2", "--out", str(out),
                                       "--dry-run"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"would package {_variant(8)} (onnx-int8)" in text and "storage budget of 2 MB" in text
    assert not out.exists()
