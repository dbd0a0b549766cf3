"""The report: Pareto frontier, budget answers, the train-large verdict, and the HTML/Markdown files."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from tlc_export.report import build_report, load_report_data
from tlc_export.report.answers import storage_answers, train_large_verdict
from tlc_export.report.pareto import best_within, geometric_budgets, pareto_frontier


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


def _v(model: str, params: int, sp: float, bits: int, storage: int, acc: float) -> dict:
    return {"variant": f"{model}.s{round(sp * 100):02d}.b{bits}", "model": model, "params": params, "sparsity": sp,
            "bits": bits, "storage_bytes": storage, "fp32_bytes": params * 4, "dev_accuracy": acc, "test_accuracy": acc - 0.01}


SMALL, LARGE = "2L-128H", "6L-384H"


def _variants(large_acc: float) -> list[dict]:
    return [
        _v(SMALL, 1_000_000, 0.0, 32, 4_000_000, 0.70), _v(SMALL, 1_000_000, 0.0, 8, 1_000_000, 0.70),
        _v(SMALL, 1_000_000, 0.6, 4, 250_000, 0.60),
        _v(LARGE, 10_000_000, 0.0, 32, 40_000_000, 0.80), _v(LARGE, 10_000_000, 0.0, 4, 5_000_000, 0.78),
        _v(LARGE, 10_000_000, 0.6, 4, 900_000, large_acc), _v(LARGE, 10_000_000, 0.6, 6, 1_400_000, 0.77),
    ]


def test_verdict_won_and_lost() -> None:
    won = train_large_verdict(_variants(0.74))
    assert won.decided and won.won and won.witness["variant"] == f"{LARGE}.s60.b4"
    assert won.reference["variant"] == f"{SMALL}.s00.b8"  # the mildest compression of the small model
    assert won.sentence.startswith("Yes")
    lost = train_large_verdict(_variants(0.65))
    assert lost.decided and not lost.won and lost.sentence.startswith("No") and "5.0 points lower" in lost.sentence
    one = train_large_verdict([v for v in _variants(0.7) if v["model"] == SMALL])
    assert not one.decided


def test_storage_answers_pick_the_best_that_fits() -> None:
    ans = storage_answers(_variants(0.74), [0.3, 1.0, 100])
    assert [a["variant"] for a in ans] == [f"{SMALL}.s60.b4", f"{LARGE}.s60.b4", f"{LARGE}.s00.b32"]


def fake_run(root: Path, large_acc: float = 0.74) -> Path:
    (root / "compress").mkdir(parents=True)
    (root / "compress" / "results.json").write_text(json.dumps(_variants(large_acc)))
    for size, ppl in ((SMALL, 40.0), (LARGE, 30.0)):
        d = root / "pretrain" / size
        d.mkdir(parents=True)
        d.joinpath("curves.jsonl").write_text("".join(
            json.dumps({"size": size, "elapsed_s": 10.0 * i, "step": 5 * i, "tokens": 100 * i, "val_ppl": ppl + 100 / i}) + "\n"
            for i in range(1, 6)))
    rows = []
    for v in _variants(large_acc):
        for backend, lat in (("torch-eager", 5.0), ("onnxruntime", 3.0)):
            dense = v["sparsity"] == 0
            rows.append({**v, "format": "torch" if backend.startswith("torch") else "onnx-fp32", "backend": backend,
                         "dtype": "fp32", "batch": 1 if dense else None, "seq_len": 128 if dense else None,
                         "latency_ms_p50": lat * v["params"] / 1e6 if dense else None, "accuracy": v["dev_accuracy"],
                         "status": "ok"})
    rows.append({**_variants(large_acc)[0], "backend": "tensorrt", "format": "tensorrt-int8", "dtype": "fp32",
                 "status": "unavailable", "reason": "no CUDA"})
    (root / "bench").mkdir()
    (root / "bench" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_report_files_hold_every_variant_the_frontier_and_the_verdict(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    out = build_report(load_report_data(run, "demo"), run / "report")
    html = (run / "report" / "index.html").read_text()
    for v in _variants(0.74):
        assert f'data-variant="{v["variant"]}"' in html
    assert set(out["frontier"]) == {f"{SMALL}.s60.b4", f"{LARGE}.s60.b4", f"{LARGE}.s60.b6", f"{LARGE}.s00.b4", f"{LARGE}.s00.b32"}
    assert out["train_large_won"] is True and "Yes: train large" in html
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
    assert (run / "report" / "accuracy_vs_storage.png").read_bytes()[:4] == b"\x89PNG"


def test_report_says_so_when_train_large_lost(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", large_acc=0.6)
    out = build_report(load_report_data(run), run / "report")
    assert out["train_large_won"] is False
    assert "did not win" in (run / "report" / "index.html").read_text()
