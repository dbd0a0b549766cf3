"""The translation report: the verdict's paired test over sentences, dev-chosen Pareto frontier and answers,
the export/bench join, and index.html / summary.md with an interval on every row.

Run directories are synthetic, written here in the contract's layout (MT-CONTRACT, docs/ARCHITECTURE.md
"Translation report"); hypotheses are references with words replaced at random, and BLEU is sacrebleu's own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import sacrebleu

from tlc_export.errors import StageError
from tlc_export.report.answers import storage_answers
from tlc_export.report.pareto import pareto_frontier
from tlc_export.tasks.translation.report import (
    build_translation_report,
    deploy_answers,
    dev_frontier,
    load_translation_report_data,
)
from tlc_export.tasks.translation.report.tables import file_rows
from tlc_export.tasks.translation.report.verdict import SentenceComparator, translation_verdict

WORDS = ("the light and darkness were divided by god on the first day of creation while waters "
         "covered earth heaven stars moon sun evening morning land seas trees fruit seed grass").split()
SMALL, LARGE = "2L-64H", "4L-128H"
PARAMS = {SMALL: 100_000, LARGE: 400_000}
# variant -> (model, sparsity, bits, storage bytes)
GRID = {
    f"{SMALL}.s00.b32": (SMALL, 0.0, 32, 400_000), f"{SMALL}.s00.b8": (SMALL, 0.0, 8, 100_000),
    f"{SMALL}.s50.b4": (SMALL, 0.5, 4, 30_000),
    f"{LARGE}.s00.b32": (LARGE, 0.0, 32, 1_600_000), f"{LARGE}.s00.b8": (LARGE, 0.0, 8, 400_000),
    f"{LARGE}.s50.b4": (LARGE, 0.5, 4, 95_000), f"{LARGE}.s75.b4": (LARGE, 0.75, 4, 60_000),
}
REFERENCE, WITNESS = f"{SMALL}.s00.b8", f"{LARGE}.s50.b4"  # the verdict's pair under DEFAULT_NOISE


def _sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 14)))) for _ in range(n)]


SPLITS = {"dev": _sentences(50, 1), "test": _sentences(80, 2)}


def _noisy(refs: list[str], p: float, seed: int) -> list[str]:
    """Each reference word replaced by a random word with probability p (an independent, known-quality system)."""
    rng = np.random.default_rng(seed)
    return [" ".join(w if rng.random() >= p else str(rng.choice(WORDS)) + "x" for w in r.split()) for r in refs]


# variant -> (dev noise, test noise); the witness is chosen on dev among the large variants within 100 kB
DEFAULT_NOISE = {
    f"{SMALL}.s00.b32": (0.3, 0.3), f"{SMALL}.s00.b8": (0.35, 0.35), f"{SMALL}.s50.b4": (0.6, 0.6),
    f"{LARGE}.s00.b32": (0.1, 0.1), f"{LARGE}.s00.b8": (0.12, 0.12),
    f"{LARGE}.s50.b4": (0.15, 0.15), f"{LARGE}.s75.b4": (0.4, 0.4),
}


def _scores(hyps: dict[str, list[str]]) -> dict:
    out = {}
    for split, h in hyps.items():
        bleu = sacrebleu.corpus_bleu(h, [SPLITS[split]]).score
        chrf = sacrebleu.corpus_chrf(h, [SPLITS[split]]).score
        out.update({f"{split}_bleu": bleu, f"{split}_bleu_ci": [max(0.0, bleu - 2.0), bleu + 2.0], f"{split}_chrf": chrf,
                    f"{split}_chrf_ci": [chrf - 1.5, chrf + 1.5], f"{split}_n": len(h)})
    return out


def _write_predictions(root: Path, rel: str, hyps: dict[str, list[str]]) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({s: {"sources": [f"src {i}" for i in range(len(SPLITS[s]))], "references": SPLITS[s],
                                    "hypotheses": h} for s, h in hyps.items()}))


def _write_run(root: Path, noise: dict[str, tuple[float, float]] | None = None, *, same_test_as: dict[str, str] | None = None,
               export: bool = False) -> None:
    """A run directory in the contract's layout; `same_test_as` {variant: other} gives variant other's test translations."""
    noise = noise or DEFAULT_NOISE
    hyps = {v: {"dev": _noisy(SPLITS["dev"], noise[v][0], 10 + i), "test": _noisy(SPLITS["test"], noise[v][1], 100 + i)}
            for i, v in enumerate(GRID)}
    for v, other in (same_test_as or {}).items():
        hyps[v]["test"] = hyps[other]["test"]
    models = []
    for size in (SMALL, LARGE):
        rel = f"translation/{size}/predictions.json"
        _write_predictions(root, rel, hyps[f"{size}.s00.b32"])
        models.append({"model": size, "params": PARAMS[size], "steps": 120, "tokens_per_s": 900.0, "final_dev_loss": 3.1,
                       "checkpoint": f"translation/{size}/checkpoint", "curves": f"translation/{size}/curves.jsonl",
                       "predictions": rel, "bleu_signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.5.1",
                       "interval_method": "sacrebleu bootstrap", **_scores(hyps[f"{size}.s00.b32"])})
    (root / "translation").mkdir(parents=True, exist_ok=True)
    (root / "translation" / "results.json").write_text(json.dumps({
        "source_lang": "en", "target_lang": "fr", "time_budget_s": 60, "selection_split": "dev", "report_split": "test",
        "models": models}))
    (root / "translation" / "curves_bleu_wallclock.png").write_bytes(b"\x89PNG\r\n\x1a\nFIGURE5")
    rows = []
    for v, (model, sp, bits, storage) in GRID.items():
        rel = f"compress/{model}/variants/{v}.predictions.json"
        _write_predictions(root, rel, hyps[v])
        rows.append({"variant": v, "model": model, "params": PARAMS[model], "sparsity": sp, "sparsity_reached": sp,
                     "bits": bits, "granularity": "row", "symmetric": True, "group_size": None, "grid": None,
                     "artifact": f"compress/{model}/variants/{v}.safetensors", "storage_bytes": storage,
                     "decoding": "greedy", "predictions": rel, **_scores(hyps[v])})
    (root / "compress").mkdir(parents=True, exist_ok=True)
    (root / "compress" / "results.json").write_text(json.dumps(rows))
    if export:
        _write_export(root, hyps)


def _write_export(root: Path, hyps: dict) -> None:
    exports, bench = [], []
    for v, fmt, file_bytes, sps in ((WITNESS, "onnx-int8", 130_000, 40.0), (WITNESS, "onnx-fp32", 480_000, 25.0),
                                    (REFERENCE, "onnx-int8", 140_000, 60.0)):
        rel = f"export/{v}/{fmt}/predictions.json"
        _write_predictions(root, rel, hyps[v])
        storage = next(s for k, (_, _, _, s) in GRID.items() if k == v)
        exports.append({"variant": v, "model": GRID[v][0], "format": fmt, "sparsity": GRID[v][1], "bits": GRID[v][2],
                        "folder": f"export/{v}/{fmt}", "file_bytes": file_bytes, "storage_bytes": storage, "status": "ok",
                        "reason": None, "validation": {"greedy_equal": True}, "decoding": "greedy", "predictions": rel,
                        **_scores(hyps[v])})
        for b, scale in ((1, 1.0), (32, 6.0)):
            bench.append({"variant": v, "model": GRID[v][0], "backend": "onnxruntime", "format": fmt, "batch_size": b,
                          "threads": 2, "sentences": 80, "sentences_per_s": sps * scale, "p50_ms": 1000 / (sps * scale),
                          "p90_ms": 1200 / (sps * scale), "storage_bytes": storage, "file_bytes": file_bytes,
                          "decoding": "greedy", **_scores(hyps[v])})
    exports.append({"variant": REFERENCE, "model": SMALL, "format": "onnx-int4", "status": "failed",
                    "reason": "validation: greedy outputs differ", "file_bytes": None})
    for b in (1, 32):
        bench.append({"variant": REFERENCE, "model": SMALL, "backend": "torch-eager", "format": "safetensors",
                      "batch_size": b, "threads": 2, "sentences": 80, "sentences_per_s": 30.0 * b ** 0.5, "p50_ms": 33.0,
                      "p90_ms": 40.0, "storage_bytes": 100_000, "file_bytes": 100_000, "decoding": "greedy",
                      **_scores(hyps[REFERENCE])})
    (root / "export").mkdir(parents=True, exist_ok=True)
    (root / "export" / "results.json").write_text(json.dumps(exports))
    (root / "bench").mkdir(parents=True, exist_ok=True)
    (root / "bench" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bench))


def _verdict(root: Path):
    data = load_translation_report_data(root)
    return translation_verdict(data.variants, SentenceComparator(data))


def test_verdict_is_within_noise_for_identical_translations(tmp_path: Path) -> None:
    _write_run(tmp_path, same_test_as={WITNESS: REFERENCE})
    v = _verdict(tmp_path)
    assert v.decided and v.outcome == "within noise" and not v.won
    assert v.witness["variant"] == WITNESS and v.reference["variant"] == REFERENCE
    assert v.sentence.startswith("Within noise") and "won on" not in v.sentence
    assert v.comparison.diff == pytest.approx(0.0, abs=1e-9)


def test_verdict_is_won_for_a_clearly_better_system_and_lost_reversed(tmp_path: Path) -> None:
    _write_run(tmp_path / "won")
    v = _verdict(tmp_path / "won")
    assert v.outcome == "won" and v.won and v.witness["variant"] == WITNESS
    ref_bleu = sacrebleu.corpus_bleu(_noisy(SPLITS["test"], 0.35, 101), [SPLITS["test"]]).score
    assert v.comparison.bleu_b == pytest.approx(ref_bleu, abs=0.01)  # sacrebleu's own BLEU of the reference
    assert v.comparison.diff_ci_low > 0
    assert re.match(r"Yes: train large, then compress won on test \(n = 80 sentences\): 4L-128H at 50%/4b \(0\.10 MB\) "
                    r"scores BLEU \d+\.\d\d \[", v.sentence)
    lost_noise = {**DEFAULT_NOISE, WITNESS: (0.15, 0.8), f"{LARGE}.s75.b4": (0.5, 0.8)}
    _write_run(tmp_path / "lost", lost_noise)
    lost = _verdict(tmp_path / "lost")
    assert lost.outcome == "lost" and lost.witness["variant"] == WITNESS and lost.comparison.diff_ci_high < 0


def test_a_witness_that_beats_its_own_uncompressed_model_is_flagged_and_decides_nothing(tmp_path: Path) -> None:
    # The large dense model translates worse than its own 50 %-sparse 4-bit variant: recovery training, not
    # compression, made the witness good.
    _write_run(tmp_path, {**DEFAULT_NOISE, f"{LARGE}.s00.b32": (0.6, 0.6)})
    v = _verdict(tmp_path)
    assert not v.decided and v.outcome is None and "training effect, not a compression effect" in v.sentence
    out = build_translation_report(load_translation_report_data(tmp_path), tmp_path / "report")
    assert WITNESS in out["training_effects"]


def test_verdict_is_not_tested_below_twenty_sentences() -> None:
    from tlc_export.tasks.translation.report.verdict import translation_verdict as tv

    class Tiny:  # a comparator over 12 sentences
        def __call__(self, a: dict, b: dict, split: str) -> object:
            from tlc_export.tasks.translation.metrics import compare_statistics

            stats = np.tile([[5, 3, 2, 1, 8, 7, 6, 5, 8, 9]], (12, 1)).astype(float)
            return compare_statistics(stats, stats * 0.5)

    rows = [{"variant": k, "model": m, "params": PARAMS[m], "sparsity": sp, "bits": b, "storage_bytes": st,
             "dev_bleu": 10.0, "test_bleu": 10.0, "predictions": k} for k, (m, sp, b, st) in GRID.items()]
    v = tv(rows, Tiny())
    assert not v.decided and v.sentence.startswith("Not tested: the test split has 12 sentences")


def test_verdict_is_not_tested_without_translations(tmp_path: Path) -> None:
    _write_run(tmp_path)
    (tmp_path / f"compress/{SMALL}/variants/{REFERENCE}.predictions.json").unlink()
    v = _verdict(tmp_path)
    assert not v.decided and v.outcome is None and v.sentence.startswith("Not tested")


def test_frontier_answers_and_witness_are_chosen_on_dev_not_test(tmp_path: Path) -> None:
    # dev and test disagree: the 75 % variant is best on dev among the small-storage ones, worst on test
    noise = {**DEFAULT_NOISE, f"{LARGE}.s75.b4": (0.05, 0.7), WITNESS: (0.3, 0.05)}
    _write_run(tmp_path, noise)
    data = load_translation_report_data(tmp_path)
    rows = data.variants
    flipped = [dict(r) for r in rows]
    tests = [r["test_bleu"] for r in rows]
    for r, t in zip(flipped, reversed(tests), strict=True):  # test scores reversed across variants
        r["test_bleu"] = t

    def by_dev(rs: list[dict]) -> list[str]:  # the frontier by hand: staircase of (storage up, dev BLEU up)
        out, best = [], -1.0
        for r in sorted(rs, key=lambda r: (r["storage_bytes"], -r["dev_bleu"])):
            if r["dev_bleu"] > best:
                out.append(r["variant"])
                best = r["dev_bleu"]
        return out

    front = [r["variant"] for r in dev_frontier(rows)]
    assert front == by_dev(rows) == [r["variant"] for r in dev_frontier(flipped)]
    on_test = [r["variant"] for r in pareto_frontier(rows, x=lambda r: r["storage_bytes"], y=lambda r: r["test_bleu"])]
    assert on_test != front  # the fixture can tell the two apart
    picks = [a["variant"] for a in storage_answers(rows, [0.07, 0.1, 0.5, 2.0], metric="bleu", compare=lambda *_: None)]
    assert picks == [a["variant"] for a in storage_answers(flipped, [0.07, 0.1, 0.5, 2.0], metric="bleu",
                                                           compare=lambda *_: None)]
    assert picks[0] == f"{LARGE}.s75.b4"  # best dev BLEU under 70 kB although its test BLEU is low
    assert translation_verdict(rows, lambda *_: None).witness["variant"] == f"{LARGE}.s75.b4"
    assert translation_verdict(flipped, lambda *_: None).witness["variant"] == f"{LARGE}.s75.b4"


def test_deploy_answer_marks_a_pick_the_test_sentences_cannot_tell_from_its_runner_up(tmp_path: Path) -> None:
    _write_run(tmp_path / "same", same_test_as={WITNESS: REFERENCE})
    (same,) = deploy_answers(load_translation_report_data(tmp_path / "same"), [0.1])
    assert (same["variant"], same["runner_up"]) == (WITNESS, REFERENCE)  # dev's first and second under 100 kB
    assert same["within_noise"] is True and same["mark"].startswith("≈ runner-up")
    assert same["test_bleu_ci"] and same["dev_bleu_ci"]
    _write_run(tmp_path / "apart")
    (apart,) = deploy_answers(load_translation_report_data(tmp_path / "apart"), [0.1])
    assert apart["variant"] == WITNESS and apart["vs_runner_up"] == "won" and apart["mark"].startswith("beats runner-up")


def test_files_join_export_and_bench_rows_of_the_same_model(tmp_path: Path) -> None:
    _write_run(tmp_path, export=True)
    data = load_translation_report_data(tmp_path)
    rows = {(r["variant"], r["backend"], r["format"]): r for r in file_rows(data.exports, data.bench)}
    int8 = rows[(WITNESS, "onnxruntime", "onnx-int8")]
    exp = next(e for e in data.exports if e["variant"] == WITNESS and e["format"] == "onnx-int8")
    assert int8["file_bytes"] == 130_000 and int8["test_bleu"] == exp["test_bleu"]
    assert int8["b1_sentences_per_s"] == 40.0 and int8["b32_sentences_per_s"] == 240.0
    assert rows[(WITNESS, "onnxruntime", "onnx-fp32")]["b1_sentences_per_s"] == 25.0
    assert rows[(REFERENCE, "onnxruntime", "onnx-int4")]["status"] == "failed"
    assert rows[(REFERENCE, "torch-eager", "safetensors")]["b1_p50_ms"] == 33.0


_INTERVAL = re.compile(r"\[-?\d+\.\d\d, -?\d+\.\d\d\]")


def _table_rows(html: str, ident: str) -> list[str]:
    m = re.search(rf'<table id="{ident}"[^>]*>.*?<tbody>(.*?)</tbody>', html, re.S)
    assert m, f"table {ident} missing"
    return re.findall(r"<tr[^>]*>.*?</tr>", m.group(1), re.S)


@pytest.mark.parametrize("export", [False, True])
def test_report_renders_with_an_interval_on_every_row(tmp_path: Path, export: bool) -> None:
    _write_run(tmp_path, export=export)
    out = tmp_path / "report"
    summary = build_translation_report(load_translation_report_data(tmp_path, name="mt-micro"), out, [0.07, 0.1, 0.5, 2.0])
    html = (out / "index.html").read_text()
    md = (out / "summary.md").read_text()
    assert summary["verdict_outcome"] == "won" and summary["frontier_split"] == "dev"
    verdict = re.search(r"<p id='verdict'[^>]*>(.*?)</p>", html, re.S).group(1)
    assert verdict.startswith("Yes: train large, then compress won on test")
    assert html.index("id='verdict'") < html.index("<table")  # the verdict is on top
    assert "src=\"http" not in html and "<link" not in html  # self-contained
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 2  # BLEU vs storage + Figure 5
    assert (out / "bleu_vs_storage.png").read_bytes()[:4] == b"\x89PNG"
    tables = ["storage-answers", "size-comparisons", "training-table", "variants-table"]
    tables += ["files-table", "bench-table"] if export else []
    for ident in tables:
        rows = _table_rows(html, ident)
        assert rows, ident
        for tr in rows:
            if 'class="failed"' not in tr:
                assert _INTERVAL.search(tr), f"{ident}: a row without an interval: {tr[:200]}"
    assert len(_table_rows(html, "variants-table")) == len(GRID)
    assert ("files-table" in html) is export
    if not export:
        assert "No export or bench rows in this run" in html
    for title in ("## Verdict", "## Which variant to deploy", "## BLEU vs storage", "## Training", "![", "| budget MB |"):
        assert title in md
    assert md.count("Yes: train large, then compress won") == 1


def test_bad_results_file_names_the_file(tmp_path: Path) -> None:
    _write_run(tmp_path)
    (tmp_path / "compress" / "results.json").write_text("[{")
    with pytest.raises(StageError, match=r"compress/results\.json: not valid JSON"):
        load_translation_report_data(tmp_path)
    _write_run(tmp_path)
    (tmp_path / "compress" / "results.json").write_text(json.dumps([{"variant": "x", "model": SMALL}]))
    with pytest.raises(StageError, match="row 0 has no 'storage_bytes'"):
        load_translation_report_data(tmp_path)


def test_stage_writes_the_report_and_refuses_an_empty_run(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from tlc_export.config.bench import ReportConfig
    from tlc_export.stages.base import StageContext
    from tlc_export.stages.report import ReportStage
    from tlc_export.tasks.translation.family import TranslationFamily

    def ctx(root: Path) -> StageContext:
        (root / "report").mkdir(parents=True, exist_ok=True)
        recipe = SimpleNamespace(name="mt-micro", report=ReportConfig())
        return StageContext(recipe=recipe, run_dir=SimpleNamespace(root=root), out_dir=root / "report", inputs={},
                            console=Console(quiet=True), family=TranslationFamily())  # type: ignore[arg-type]

    with pytest.raises(StageError, match="neither translation/results.json nor compress/results.json has rows"):
        ReportStage().run(ctx(tmp_path / "empty"))
    assert not (tmp_path / "empty" / "report" / "index.html").exists()
    _write_run(tmp_path / "run")
    out = ReportStage().run(ctx(tmp_path / "run"))
    assert out["index"] == "report/index.html" and out["verdict_outcome"] == "won"
    assert (tmp_path / "run" / "report" / "summary.md").read_text().startswith("# Train Large, Then Compress (translation)")


def test_regime_sentence_says_how_far_the_run_is_from_the_papers_data() -> None:
    from tlc_export.tasks.translation.report.render import regime_text

    models = [{"model": "2L-128H", "steps": 609, "tokens": 1_170_000, "epochs": 0.52}]
    text = regime_text({"train_pairs": 29_657}, models)
    assert "29,657 training pairs, 0.08% of the paper's WMT14" in text  # 29,657 / 36 M
    assert "2L-128H 609 steps, 1,170,000 tokens (0.52 epochs)" in text
    assert regime_text({}, models) == "" and regime_text({"train_pairs": 10}, [{"model": "x"}]) == ""
