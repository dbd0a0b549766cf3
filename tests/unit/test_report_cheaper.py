"""The answer tables prefer a smaller / faster row where dev shows it costs at most the margin, and
`tlc package --max-storage-mb / --max-latency-ms` ships the same pick (report/answers.prefer_cheaper)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tlc_export.config.bench import ReportConfig
from tlc_export.package.readme import selection_text
from tlc_export.predictions import SplitPredictions
from tlc_export.report import answer_tables
from tlc_export.report.answers import NONINFERIORITY_MARGIN, latency_answers, storage_answers
from tlc_export.report.data import ReportData
from tlc_export.tasks.classification.package.select import choose

N = 800  # dev examples
LABELS = np.zeros(N, dtype=np.int64)


def _flags(right: int, n: int = N) -> np.ndarray:
    out = np.zeros(n, bool)
    out[:right] = True
    return out


def _preds(dev: np.ndarray, test: np.ndarray | None = None) -> dict[str, SplitPredictions]:
    test = dev if test is None else test
    return {"dev": SplitPredictions(np.where(dev, 0, 1), np.zeros(dev.size, np.int64)),
            "test": SplitPredictions(np.where(test, 0, 1), np.zeros(test.size, np.int64))}


def _variant(name: str, bits: int, storage: int, dev: np.ndarray) -> dict[str, Any]:
    return {"variant": name, "model": "4L-192H", "params": 1_000, "sparsity": 0.0, "bits": bits,
            "storage_bytes": storage, "dev_accuracy": float(dev.mean()), "test_accuracy": float(dev.mean()),
            "predictions": f"compress/{name}.predictions.npz"}


def _storage_case(cheap_dev: np.ndarray, best_dev: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    best = _variant("v.b32", 32, 4_000_000, best_dev)
    cheap = _variant("v.b4", 4, 600_000, cheap_dev)
    return [best, cheap], {best["predictions"]: _preds(best_dev), cheap["predictions"]: _preds(cheap_dev)}


def test_a_smaller_variant_with_the_same_dev_predictions_is_preferred() -> None:
    best = _flags(640)  # 80 %
    rows, preds = _storage_case(best.copy(), best)
    rows[1]["dev_accuracy"] -= 0.001  # a hair lower on dev: today's rule would never pick it
    (a,) = storage_answers(rows, [10.0], preds)
    assert a["variant"] == "v.b4" and a["preferred_over"] == "v.b32"
    assert a["margin"] == pytest.approx(0.01)
    # Identical flags: only the share of differing examples is uncertain, 0.45 points at n = 800.
    assert -0.0046 < a["dev_lower_bound"] < -0.0044
    assert a["choice"] == "smaller, within 1 pt of v.b32 on dev (lower bound −0.5 pt)"
    # The report-split comparison is the pick's, against the dev-best it replaced.
    assert a["runner_up"] == "v.b32" and a["vs_runner_up"] == "within noise"
    # Margin 0: the dev-best, as before.
    (plain,) = storage_answers(rows, [10.0], preds, margin=0.0)
    assert plain["variant"] == "v.b32" and plain["preferred_over"] is None and plain["choice"] == "best on dev"


def test_a_smaller_variant_three_points_worse_on_dev_is_not_preferred() -> None:
    best = _flags(640)
    rows, preds = _storage_case(_flags(616), best)  # 77 %: 24 examples worse, none better
    (a,) = storage_answers(rows, [10.0], preds)
    assert a["variant"] == "v.b32" and a["preferred_over"] is None and a["choice"] == "best on dev"
    assert a["runner_up"] == "v.b4"


def test_few_dev_examples_are_no_evidence() -> None:
    # 60 dev examples with identical predictions: the bound is −5.8 points.
    best = _flags(48, n=60)
    rows, preds = _storage_case(best.copy(), best)
    rows[1]["dev_accuracy"] -= 0.001
    (a,) = storage_answers(rows, [10.0], preds)
    assert a["variant"] == "v.b32" and a["preferred_over"] is None
    # Without dev predictions there is no evidence at all.
    no_dev = {k: {"test": v["test"]} for k, v in preds.items()}
    (b,) = storage_answers(rows, [10.0], no_dev)
    assert b["variant"] == "v.b32" and b["preferred_over"] is None


def test_the_cheapest_non_inferior_row_is_the_pick() -> None:
    best = _flags(640)
    rows, preds = _storage_case(best.copy(), best)
    mid = _variant("v.b8", 8, 1_100_000, best)
    tiny = _variant("v.s90.b2", 2, 200_000, _flags(560))  # 10 points worse: never
    rows += [mid, tiny]
    preds.update({mid["predictions"]: _preds(best), tiny["predictions"]: _preds(_flags(560))})
    for r in rows[1:3]:
        r["dev_accuracy"] -= 0.001
    (a,) = storage_answers(rows, [10.0], preds)
    assert a["variant"] == "v.b4" and a["preferred_over"] == "v.b32"


def _bench(variant: str, fmt: str, ms: float, dev: np.ndarray) -> dict[str, Any]:
    return {"variant": variant, "format": fmt, "backend": "onnxruntime", "dtype": "fp32", "batch": 1, "status": "ok",
            "latency_ms_p50": ms, "dev_accuracy": float(dev.mean()), "test_accuracy": float(dev.mean()),
            "predictions": f"export/{variant}.{fmt}.predictions.npz"}


def _latency_case(own_dev: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    best = _flags(640)
    rows = [_bench("v.b32", "onnx-fp32", 3.0, best), _bench("v.b8", "onnx-int8", 2.0, own_dev)]
    rows[1]["dev_accuracy"] = min(rows[1]["dev_accuracy"], rows[0]["dev_accuracy"] - 0.001)
    return rows, {r["predictions"]: _preds(best if r["format"] == "onnx-fp32" else own_dev) for r in rows}


def test_the_latency_table_applies_the_same_rule() -> None:
    rows, preds = _latency_case(_flags(640))
    _, (a,) = latency_answers(rows, [5.0], preds)
    assert (a["variant"], a["format"]) == ("v.b8", "onnx-int8")
    assert a["preferred_over"] == "v.b32 onnx-fp32 onnxruntime fp32"
    assert a["choice"].startswith("faster, within 1 pt of v.b32 onnx-fp32 onnxruntime fp32 on dev (lower bound −")
    rows, preds = _latency_case(_flags(616))
    _, (b,) = latency_answers(rows, [5.0], preds)
    assert (b["variant"], b["preferred_over"]) == ("v.b32", None)


def test_the_recipe_margin_is_the_functions_default_and_is_checked() -> None:
    assert ReportConfig().noninferiority_margin_points / 100 == pytest.approx(NONINFERIORITY_MARGIN)
    with pytest.raises(ValueError, match="noninferiority_margin_points"):
        ReportConfig(noninferiority_margin_points=-1)


def _fake_run(root: Path) -> ReportData:
    """A run directory holding what `choose` reads for budgets: compress rows, export rows, bench rows."""
    best = _flags(640)
    variants, vpreds = _storage_case(best.copy(), best)
    variants[1]["dev_accuracy"] -= 0.001
    bench, bpreds = _latency_case(best.copy())
    (root / "export").mkdir(parents=True)
    exports = [{"variant": v, "format": f, "status": "ok", "path": f"export/{v}.{f}.onnx"}
               for v, f in (("v.b32", "onnx-fp32"), ("v.b4", "onnx-int4"), ("v.b8", "onnx-int8"))]
    (root / "export" / "results.json").write_text(json.dumps({"artifacts": exports}))
    return ReportData(run_dir=root, variants=variants, bench=bench, predictions={**vpreds, **bpreds})


def test_package_ships_the_answer_tables_pick(tmp_path: Path) -> None:
    data = _fake_run(tmp_path)
    tables = answer_tables(data, storage_budgets_mb=[10.0], latency_budgets_ms=[5.0], margin=0.01)
    by_storage = choose(tmp_path, max_storage_mb=10.0, data=data, margin=0.01, export_missing=False)
    assert by_storage.variant == tables.storage[0]["variant"] == "v.b4"
    assert by_storage.format == "onnx-int4"
    assert "smaller, within 1 pt of v.b32" in selection_text(by_storage.selection)
    by_latency = choose(tmp_path, max_latency_ms=5.0, data=data, margin=0.01, export_missing=False)
    assert (by_latency.variant, by_latency.format) == (tables.latency[0]["variant"], tables.latency[0]["format"])
    assert by_latency.format == "onnx-int8"
    assert "faster, within 1 pt of v.b32" in selection_text(by_latency.selection)
    # The same margin off: both go back to the dev-best, in the table and in the package.
    off = choose(tmp_path, max_storage_mb=10.0, data=data, margin=0.0, export_missing=False)
    assert off.variant == answer_tables(data, storage_budgets_mb=[10.0], margin=0.0).storage[0]["variant"] == "v.b32"
