"""The report: Pareto frontier, budget answers, the train-large verdict (paired test on test), and the
HTML/Markdown files."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tlc_export.predictions import SplitPredictions, save_predictions
from tlc_export.report import build_report, load_report_data
from tlc_export.report.answers import latency_answers, storage_answers, train_large_verdict
from tlc_export.report.pareto import best_within, geometric_budgets, pareto_frontier
from tlc_export.stats import wilson_interval

N = 400  # test examples
LABELS = np.array([1] * 240 + [0] * 160)  # majority class: 60 %


def test_pareto_frontier_on_hand_made_points() -> None:
    pts = [(10, 0.70), (5, 0.60), (20, 0.70), (1, 0.50), (5, 0.65), (8, 0.55), (30, 0.80), (1, 0.40)]
    assert pareto_frontier(pts) == [(1, 0.50), (5, 0.65), (10, 0.70), (30, 0.80)]
    assert pareto_frontier([]) == []
    assert pareto_frontier([(2, float("nan")), (3, 0.5)]) == [(3, 0.5)]


def test_best_within_and_budgets() -> None:
    pts = [(1, 0.5), (5, 0.65), (10, 0.70), (12, 0.70)]
    assert best_within(pts, 11) == (10, 0.70)
    assert best_within(pts, 100) == (10, 0.70)  # tie on accuracy: the cheaper one
    assert best_within(pts, 0.5) is None
    b = geometric_budgets(1, 1000, 4)
    assert b[0] == 1 and b[-1] == 1000 and b[1] == pytest.approx(10)


def _predicted(correct_first: int, shift: int = 0) -> np.ndarray:
    """Predictions that are right on `correct_first` examples (starting at `shift`, wrapping) and wrong elsewhere."""
    right = np.zeros(N, bool)
    right[(np.arange(correct_first) + shift) % N] = True
    return np.where(right, LABELS, 1 - LABELS)


def _v(model: str, params: int, sp: float, bits: int, storage: int, dev: float, test_right: int, shift: int = 0) -> dict:
    name = f"{model}.s{round(sp * 100):02d}.b{bits}"
    lo, hi = wilson_interval(test_right, N)
    return {"variant": name, "model": model, "params": params, "sparsity": sp, "bits": bits, "storage_bytes": storage,
            "fp32_bytes": params * 4, "dev_accuracy": dev, "test_accuracy": test_right / N, "test_accuracy_ci": [lo, hi],
            "predictions": f"compress/{model}/variants/{name}.predictions.npz", "_pred": _predicted(test_right, shift)}


SMALL, LARGE = "2L-128H", "6L-384H"


def _variants(large_dev: float = 0.74, large_test_right: int = 320, large_shift: int = 0,
              large_dense_right: int = 330) -> list[dict]:
    return [
        _v(SMALL, 1_000_000, 0.0, 32, 4_000_000, 0.70, 280), _v(SMALL, 1_000_000, 0.0, 8, 1_000_000, 0.70, 280),
        _v(SMALL, 1_000_000, 0.6, 4, 250_000, 0.60, 240),
        _v(LARGE, 10_000_000, 0.0, 32, 40_000_000, 0.80, large_dense_right), _v(LARGE, 10_000_000, 0.0, 4, 5_000_000, 0.78, 325),
        _v(LARGE, 10_000_000, 0.6, 4, 900_000, large_dev, large_test_right, large_shift),
        _v(LARGE, 10_000_000, 0.6, 6, 1_400_000, 0.77, 322),
    ]


def _preds(variants: list[dict]) -> dict:
    return {v["predictions"]: {"test": SplitPredictions(v["_pred"], LABELS)} for v in variants}


def test_verdict_with_identical_predictions_is_within_noise() -> None:
    vs = _variants(large_test_right=280)  # same examples right as the small reference: no discordant pair
    v = train_large_verdict(vs, _preds(vs))
    assert v.decided and not v.won and v.outcome == "within noise"
    assert v.comparison.p_value == 1.0 and v.comparison.diff == 0 and v.split == "test"
    assert v.witness["variant"] == f"{LARGE}.s60.b4" and v.reference["variant"] == f"{SMALL}.s00.b8"
    assert v.sentence.startswith("Within noise") and "n = 400" in v.sentence and "McNemar" in v.sentence
    assert "Caution" not in v.sentence
    vs[1]["learned_task"] = False  # the reference is no better than the majority class
    weak = train_large_verdict(vs, _preds(vs))
    assert not weak.decided and weak.outcome is None
    assert weak.sentence.startswith("Not decided: 2L-128H.s00.b8 did not learn the task")


def test_a_witness_that_beats_its_own_uncompressed_model_decides_nothing(tmp_path: Path) -> None:
    # The case: the 4-bit 60 %-pruned witness beats its own dense model (recovery finetuning the
    # dense model never got) and, through that, the small reference.
    vs = _variants(large_test_right=360, large_dense_right=300)
    v = train_large_verdict(vs, _preds(vs))
    assert not v.decided and v.outcome is None
    assert "6L-384H.s60.b4" in v.sentence and "training effect, not a compression effect" in v.sentence
    assert "Measured anyway: yes: train large, then compress won" in v.sentence


def test_verdict_large_gap_is_won_and_reversed_is_lost() -> None:
    vs = _variants(large_test_right=360, large_dense_right=370)  # 90 % vs 70 % on the same 400 examples
    won = train_large_verdict(vs, _preds(vs))
    assert won.decided and won.won and won.outcome == "won" and won.comparison.p_value < 1e-6
    assert won.comparison.diff == pytest.approx(0.2) and won.comparison.diff_ci_low > 0
    assert won.sentence.startswith("Yes") and "[86.7, 92.6]" in won.sentence  # Wilson 95 % of 360/400, by hand
    vs = _variants(large_test_right=200)
    lost = train_large_verdict(vs, _preds(vs))
    assert lost.decided and not lost.won and lost.outcome == "lost" and lost.sentence.startswith("No")


def test_verdict_picks_the_large_variant_on_dev_not_test() -> None:
    vs = _variants(large_dev=0.74)
    vs.append(_v(LARGE, 10_000_000, 0.6, 3, 700_000, 0.72, 380))  # better on test, worse on dev
    v = train_large_verdict(vs, _preds(vs))
    assert v.witness["variant"] == f"{LARGE}.s60.b4"


def test_verdict_is_undecided_without_a_fitting_variant_or_predictions() -> None:
    vs = [v for v in _variants() if not (v["model"] == LARGE and v["storage_bytes"] < 1_000_000)]
    v = train_large_verdict(vs, _preds(vs))
    assert not v.decided and v.outcome is None and "no variant of the largest model" in v.sentence
    assert train_large_verdict(_variants(), None).outcome is None
    one = train_large_verdict([v for v in _variants() if v["model"] == SMALL])
    assert not one.decided


def test_storage_answers_choose_on_dev_report_test_and_mark_the_runner_up() -> None:
    vs = _variants(large_test_right=282, large_shift=1)  # the 1 MB pick and its runner-up: 2 discordant examples
    ans = storage_answers(vs, [0.3, 1.0, 100], _preds(vs))
    assert [a["variant"] for a in ans] == [f"{SMALL}.s60.b4", f"{LARGE}.s60.b4", f"{LARGE}.s00.b32"]
    assert ans[0]["mark"] == "only candidate" and ans[0]["runner_up"] is None
    one = ans[1]
    assert one["runner_up"] == f"{SMALL}.s00.b8" and one["within_noise"] is True and one["mark"].startswith("≈")
    assert one["test_accuracy"] == pytest.approx(282 / N) and one["dev_accuracy"] == 0.74
    assert one["test_accuracy_ci"] == pytest.approx(list(wilson_interval(282, N)))
    top = ans[2]  # 80 % vs 78 % dev; on test 330 vs 325 right, 5 discordant: within noise as well
    assert top["runner_up"] == f"{LARGE}.s00.b4" and top["vs_runner_up"] == "within noise"
    # Without predictions the choice is the same; only the comparison is missing.
    bare = storage_answers(vs, [0.3, 1.0, 100])
    assert [a["variant"] for a in bare] == [a["variant"] for a in ans] and bare[1]["vs_runner_up"] is None


def test_latency_answers_choose_on_dev() -> None:
    rows = [
        {"variant": "a", "format": "onnx-fp32", "backend": "onnxruntime", "dtype": "fp32", "batch": 1,
         "latency_ms_p50": 2.0, "dev_accuracy": 0.70, "test_accuracy": 0.75, "status": "ok"},
        {"variant": "b", "format": "onnx-fp32", "backend": "onnxruntime", "dtype": "fp32", "batch": 1,
         "latency_ms_p50": 3.0, "dev_accuracy": 0.72, "test_accuracy": 0.60, "status": "ok"},
        {"variant": "c", "format": "torch", "backend": "torch-eager", "dtype": "fp32", "batch": 32,
         "latency_ms_p50": 1.0, "dev_accuracy": 0.99, "test_accuracy": 0.99, "status": "ok"},
    ]
    batch, ans = latency_answers(rows, [2.5, 10])
    assert batch == 1
    assert [a["variant"] for a in ans] == ["a", "b"]
    assert ans[1]["test_accuracy"] == 0.60 and ans[1]["runner_up"] == "a onnx-fp32 onnxruntime fp32"


def test_latency_answers_name_the_onnxruntime_device() -> None:
    """The same file on ONNX Runtime's CPU and CUDA providers: two rows the answer tells apart."""
    rows = [{"variant": "a", "format": "onnx-fp16", "backend": "onnxruntime", "device": d, "dtype": "fp32", "batch": 1,
             "latency_ms_p50": ms, "dev_accuracy": acc, "test_accuracy": 0.7, "status": "ok"}
            for d, ms, acc in (("cpu", 9.0, 0.70), ("cuda", 1.5, 0.71))]
    _, ans = latency_answers(rows, [2.0, 10])
    assert [(a["variant"], a["device"]) for a in ans] == [("a", "cuda"), ("a", "cuda")]
    assert ans[1]["runner_up"] == "a onnx-fp16 onnxruntime fp32"  # the CPU row: no device named
    from tlc_export.report.html import latency_answer_columns

    assert ("device", "device", "l") in latency_answer_columns("dev", "test")


def fake_run(root: Path, large_test_right: int = 360, small_learned: bool = True, large_dense_right: int = 370) -> Path:
    variants = _variants(large_test_right=large_test_right, large_dense_right=large_dense_right)
    for v in variants:
        save_predictions(root / v["predictions"], {"test": SplitPredictions(v.pop("_pred"), LABELS)})
    (root / "compress").mkdir(parents=True, exist_ok=True)
    (root / "compress" / "results.json").write_text(json.dumps(variants))
    (root / "finetune").mkdir(parents=True)
    ft = [{"model": SMALL, "params": 1_000_000, "lr": 1e-3, "seed": 100, "dev_accuracy": 0.7, "test_accuracy": 0.7,
           "test_accuracy_ci": list(wilson_interval(280, N)), "dev_accuracy_ci": [0.65, 0.75], "majority_accuracy": 0.6,
           "learned_task": small_learned, "above_majority_p": 0.001 if small_learned else 0.4,
           "candidates": [{"lr": 1e-3, "seed": 100, "dev_accuracy": 0.7}, {"lr": 3e-4, "seed": 100, "dev_accuracy": 0.66}]},
          {"model": LARGE, "params": 10_000_000, "lr": 3e-4, "seed": 300, "dev_accuracy": 0.8, "test_accuracy": 0.825,
           "test_accuracy_ci": list(wilson_interval(330, N)), "majority_accuracy": 0.6, "learned_task": True,
           "above_majority_p": 1e-9, "candidates": [{"lr": 3e-4, "seed": 300, "dev_accuracy": 0.8}]}]
    (root / "finetune" / "results.json").write_text(json.dumps({
        "label_names": ["rotten", "fresh"], "models": ft,
        "majority": {"dev": {"label": 1, "accuracy": 0.58, "n": 380}, "test": {"label": 1, "accuracy": 0.6, "n": N}}}))
    for size, ppl in ((SMALL, 40.0), (LARGE, 30.0)):
        d = root / "pretrain" / size
        d.mkdir(parents=True)
        d.joinpath("curves.jsonl").write_text("".join(
            json.dumps({"size": size, "elapsed_s": 10.0 * i, "step": 5 * i, "tokens": 100 * i, "val_ppl": ppl + 100 / i}) + "\n"
            for i in range(1, 6)))
    rows = []
    for v in variants:
        for backend, lat in (("torch-eager", 5.0), ("onnxruntime", 3.0)):
            dense = v["sparsity"] == 0
            rows.append({**v, "format": "torch" if backend.startswith("torch") else "onnx-fp32", "backend": backend,
                         "dtype": "fp32", "batch": 1 if dense else None, "seq_len": 128 if dense else None,
                         "latency_ms_p50": lat * v["params"] / 1e6 if dense else None, "accuracy": v["dev_accuracy"],
                         "test_accuracy_ci": None, "status": "ok"})
    rows.append({**variants[0], "backend": "tensorrt", "format": "tensorrt-int8", "dtype": "fp32",
                 "status": "unavailable", "reason": "no CUDA"})
    (root / "bench").mkdir()
    (root / "bench" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_report_files_hold_every_variant_the_frontier_and_the_verdict(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    out = build_report(load_report_data(run, "demo"), run / "report")
    html = (run / "report" / "index.html").read_text()
    for v in _variants():
        assert f'data-variant="{v["variant"]}"' in html
    # The frontier is chosen on dev (on test only s60.b4 of each size would be on it: test picks the luckiest).
    assert set(out["frontier"]) == {f"{SMALL}.s60.b4", f"{LARGE}.s60.b4", f"{LARGE}.s60.b6", f"{LARGE}.s00.b4",
                                    f"{LARGE}.s00.b32"} and out["frontier_split"] == "dev"
    assert out["train_large_won"] is True and out["verdict_outcome"] == "won" and out["report_split"] == "test"
    # The verdict paragraph states split, n, both intervals and the test.
    verdict = re.search(r"<p id='verdict' class='verdict won'>(.*?)</p>", html).group(1)
    assert "test split (n = 400)" in verdict and "[86.7, 92.6]" in verdict and "exact McNemar" in verdict
    assert "95 % exact conditional interval [+" in verdict
    # Chosen lr and seed of every size, with every candidate's dev score; the majority baseline.
    assert 'data-variant="6L-384H"' in html and "lr 0.0003 seed 100: 66.0 %" in html
    assert "always answering &#x27;fresh&#x27; scores 60.0 % of test (n = 400)" in html
    # Self-contained: every image inline and decodable as PNG, no external resource.
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(srcs) == 3  # frontier, latency, pretraining (no error analysis in this run)
    for s in srcs:
        assert s.startswith("data:image/png;base64,")
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert 'id="frontier-plot"' in html and "<script>" in html
    md = (run / "report" / "summary.md").read_text()
    assert "accuracy_vs_storage.png" in md and f"{LARGE}.s60.b4" in md and "Yes:" in md
    assert "test split (n = 400)" in md and "exact McNemar" in md and "Majority baseline on test: 60.0 %" in md
    assert "| 6L-384H | 10000000 | 0.0003 | 300 |" in md
    assert (run / "report" / "accuracy_vs_storage.png").read_bytes()[:4] == b"\x89PNG"
    assert "did-not-learn" not in html


def test_report_flags_a_size_that_did_not_learn_and_a_lost_verdict(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", large_test_right=200, small_learned=False)
    out = build_report(load_report_data(run), run / "report")
    assert out["train_large_won"] is False and out["verdict_outcome"] == "lost"
    html = (run / "report" / "index.html").read_text()
    assert "train large, then compress lost" in html
    assert "2L-128H did not learn the task" in html and out["did_not_learn"] == [SMALL]
    assert "2L-128H did not learn the task" in (run / "report" / "summary.md").read_text()


def test_report_shows_the_task_overlap_and_a_finetune_that_had_not_converged(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    meta = json.loads((run / "finetune" / "results.json").read_text())
    meta["models"][0].update(converged=False, evals_since_best=0)
    meta["models"][1].update(converged=True, evals_since_best=3)
    (run / "finetune" / "results.json").write_text(json.dumps(meta))
    (run / "data").mkdir()
    overlap = {"ngram": 13, "splits": {"dev": {"examples": 380, "examples_overlapping": 0},
                                       "test": {"examples": 400, "examples_overlapping": 2}},
               "pretraining_documents_scanned": 390, "pretraining_documents_overlapping": 1,
               "heldout_documents": {"brown": 100}}
    (run / "data" / "results.json").write_text(json.dumps({"task_overlap": overlap}))
    out = build_report(load_report_data(run), run / "report")
    assert out["not_converged"] == [SMALL]
    import html as html_lib

    for raw in ((run / "report" / "index.html").read_text(), (run / "report" / "summary.md").read_text()):
        text = html_lib.unescape(raw)  # the page writes ' as &#x27;; the markdown as it is
        assert "test 2 of 400 examples share a 13-word run with the pretraining corpus" in text
        assert "left out the task's 100 dev and test documents" in text
        assert f"{SMALL}'s finetuning had not converged" in text
        assert f"{LARGE}'s finetuning" not in text


def test_plots_have_error_bars_and_the_majority_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.container import ErrorbarContainer

    import tlc_export.report.plots as plots

    figs = []
    monkeypatch.setattr(plots, "_png", lambda fig: figs.append(fig) or b"png")
    vs = _variants()
    majority = {"label": 1, "accuracy": 0.6, "n": N}
    plots.accuracy_storage_png(vs, "test", majority)
    bench = [{**v, "backend": "onnxruntime", "format": "onnx-fp32", "dtype": "fp32", "batch": 1, "seq_len": 16,
              "latency_ms_p50": 1.0 + i, "status": "ok"} for i, v in enumerate(vs)]
    plots.accuracy_latency_png(bench, "test", majority)
    assert len(figs) == 2
    for fig in figs:
        ax = fig.axes[0]
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.has_yerr]
        assert bars, "accuracy points carry 95 % error bars"
        ys = [line.get_ydata() for line in ax.lines if "majority" in str(line.get_label())]
        assert ys and all(np.allclose(y, 60.0) for y in ys)
        assert "test accuracy" in ax.get_ylabel()


def test_the_training_effect_text_blames_recovery_only_for_pruned_variants() -> None:
    from types import SimpleNamespace

    from tlc_export.report.answers import training_effect_text

    c = SimpleNamespace(diff=0.01, p_value=0.039)
    base = {"variant": "2L-128H.s00.b32", "sparsity": 0.0, "bits": 32}
    pruned = training_effect_text({"variant": "2L-128H.s60.b4", "sparsity": 0.6, "bits": 4}, base, c, "test")
    quantized = training_effect_text({"variant": "2L-128H.s00.b4", "sparsity": 0.0, "bits": 4}, base, c, "test")
    assert "recovery gave it training" in pruned
    assert "recovery" not in quantized
    assert "without any retraining" in quantized


def test_report_names_own_code_files_that_carry_rank1_terms_and_the_field_that_removes_them(tmp_path: Path) -> None:
    import html as html_lib

    run = fake_run(tmp_path / "run")
    (run / "export").mkdir()
    rows = [{"variant": f"{LARGE}.s00.b8", "format": "onnx-int8", "status": "ok", "integer_kernels": {"corrections": 8}},
            {"variant": f"{LARGE}.s00.b4", "format": "onnx-int4", "status": "ok", "integer_kernels": {"corrections": 8}},
            {"variant": f"{SMALL}.s00.b8", "format": "onnx-int8", "status": "ok", "integer_kernels": {"corrections": 0}},
            {"variant": f"{SMALL}.s00.b4", "format": "onnx-int4", "status": "failed", "integer_kernels": {"corrections": 4}},
            {"variant": f"{LARGE}.s00.b32", "format": "onnx-fp32", "status": "ok"}]
    (run / "export" / "results.json").write_text(json.dumps(rows))
    build_report(load_report_data(run), run / "report")
    for raw in ((run / "report" / "index.html").read_text(), (run / "report" / "summary.md").read_text()):
        text = html_lib.unescape(raw)
        assert "2 own-code ONNX files of this run use the paper's grid" in text and "16 rank-1 term(s)" in text
        assert "compress.quantize.zero_point: integer" in text
    # every file on the integer grid (or no own-code file): no note
    (run / "export" / "results.json").write_text(json.dumps([{**r, "integer_kernels": {"corrections": 0}} for r in rows]))
    build_report(load_report_data(run), run / "report")
    assert "rank-1" not in (run / "report" / "index.html").read_text()
    assert "rank-1" not in (run / "report" / "summary.md").read_text()
