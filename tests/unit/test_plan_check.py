"""The backtest's arithmetic: interval hits, rank correlation, best-that-fit, penalty error; sizes without a fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tlc_export.plan.check import check_plan
from tlc_export.report.plan_check import spearman


def _size(name: str, pred: float, lo: float, hi: float, storage: int, pen: float) -> dict:
    return {"size": name, "predicted_final_loss": pred, "interval": [lo, hi], "trustworthy": True,
            "latency_ms": {"1": {"p50_ms": 1.0}},
            "compression": {"s00.b32": {"penalty": 0.0, "storage_bytes": storage * 4},
                            "s00.b4": {"penalty": pen, "storage_bytes": storage}}}


def test_backtest_figures(tmp_path: Path) -> None:
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "results.json").write_text(json.dumps({"time_budget_s": 60, "models": [
        {"model": "A", "final_val_loss": 5.0}, {"model": "B", "final_val_loss": 4.0},
        {"model": "C", "final_val_loss": 3.0}]}))
    nan = float("nan")
    plan = {"budget_s": 60, "level": 0.9, "limits": {"max_storage_mb": 1.5, "max_latency_ms": None, "latency_batch": 1},
            "recommendation": {"best": {"variant": "B.s00.b4"}},
            "sizes": [_size("A", 5.1, 4.9, 5.3, 1_000_000, 0.1), _size("B", 4.5, 4.3, 4.7, 1_400_000, 0.2),
                      _size("C", nan, nan, nan, 2_000_000, 0.1)]}
    pens = {"A": {"s00.b32": {"penalty": 0.0}, "s00.b4": {"penalty": 0.3}},
            "B": {"s00.b32": {"penalty": 0.0}, "s00.b4": {"penalty": 0.1}},
            "C": {"s00.b32": {"penalty": 0.0}, "s00.b4": {"penalty": 0.1}}}
    c = check_plan(plan, tmp_path, penalties=pens)
    by = {r["size"]: r for r in c["sizes"]}
    assert by["A"]["inside"] and not by["B"]["inside"] and by["B"]["error"] == pytest.approx(0.5)
    assert c["predicted"] == 2 and c["mean_abs_error"] == pytest.approx(0.3)
    assert c["rank_correlation"] == pytest.approx(1.0) and c["best_measured_size"] == "C"
    # Within 1.5 MB: A.s00.b4 (5.0 + 0.3) and B.s00.b4 (4.0 + 0.1); C's variants are too big.
    assert c["best_fitting_measured"] == "B.s00.b4" and c["recommendation_was_best"] is True
    pen = {p["variant"]: p["error"] for p in c["penalty"]}
    assert pen["A.s00.b4"] == pytest.approx(-0.2) and pen["B.s00.b4"] == pytest.approx(0.1)


def test_spearman_against_hand_values() -> None:
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6·2/(4·15)
    assert spearman([1], [2]) is None and spearman([1, 1], [1, 2]) is None


def test_the_report_keys_on_the_plan_only_for_a_run_made_from_one(tmp_path: Path) -> None:
    from tlc_export.rundir import RunDir
    from tlc_export.stages.report import ReportStage
    from tlc_export.tasks.classification.plan_check import plan_comparison

    rd = RunDir(tmp_path / "run")
    rd.set_meta(recipe_name="x")
    assert ReportStage().keyed_facts(rd) == {} and plan_comparison(rd.root, None) is None
    rd.set_meta(plan="../plan.json")  # what `tlc plan` writes
    assert ReportStage().keyed_facts(rd) == {"plan_sha256": "missing"}
    gone = plan_comparison(rd.root, None)
    assert gone["comparison"] is None and "cannot read a plan" in gone["note"]
    (tmp_path / "plan.json").write_text('{"format": "tlc-plan/1", "budget_s": 1}')
    first = ReportStage().keyed_facts(rd)["plan_sha256"]
    (tmp_path / "plan.json").write_text('{"format": "tlc-plan/1", "budget_s": 2}')
    assert ReportStage().keyed_facts(rd)["plan_sha256"] != first
    assert len(first) == 64


def test_the_report_section_says_why_a_plan_was_not_compared() -> None:
    from tlc_export.report.plan_check import plan_section_html, plan_section_markdown

    record = {"plan": "/p/plan.json", "plan_sha256": "ab" * 32, "comparison": None,
              "note": "pretrain/results.json: the run's budget is 60 s, the plan's 600 s"}
    md = plan_section_markdown(record)
    assert "Not compared: pretrain/results.json: the run's budget is 60 s" in md and "| size |" not in md
    assert "Not compared" in plan_section_html(record) and "<table" not in plan_section_html(record)
