"""Build a run's reproduction card from its run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tlc_export.atomic import read_jsonl
from tlc_export.report.answers import Verdict, train_large_verdict
from tlc_export.report.claims.card import Card
from tlc_export.report.claims.compression import claim_compression
from tlc_export.report.claims.curves import claim_steps, claim_wallclock
from tlc_export.report.claims.errors import claim_errors
from tlc_export.report.claims.frontier import claim_frontier
from tlc_export.report.claims.sizes import order_sizes
from tlc_export.report.claims.sweep import not_in_single_run
from tlc_export.report.data import ReportData

REPORTING_SPLIT = "test"  # dev selects, test reports


def _pretrain(data: ReportData) -> dict[str, Any]:
    path = data.run_dir / "pretrain" / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def run_curves(data: ReportData) -> dict[str, list[dict[str, Any]]]:
    """Every evaluation of every size (ReportData keeps only points with a perplexity)."""
    out: dict[str, list[dict[str, Any]]] = {}
    pre = data.run_dir / "pretrain"
    for curve in sorted(pre.glob("*/curves.jsonl")) if pre.is_dir() else []:
        pts = read_jsonl(curve)
        if pts:
            out[curve.parent.name] = pts
    return out or dict(data.curves)


def replica_curves(pretrain_dir: Path) -> list[dict[str, list[dict[str, Any]]]]:
    """The further pretraining seeds' curves (pretrain/replicas/seed-<s>/<size>/curves.jsonl), by seed."""
    out = []
    root = pretrain_dir / "replicas"
    folders = [p for p in root.glob("seed-*") if p.is_dir()] if root.is_dir() else []
    def seed_of(p: Path) -> int:
        tail = p.name.split("-", 1)[1]
        return int(tail) if tail.lstrip("-").isdigit() else 0

    for folder in sorted(folders, key=seed_of):
        curves = {c.parent.name: pts for c in sorted(folder.glob("*/curves.jsonl")) if (pts := read_jsonl(c))}
        if curves:
            out.append(curves)
    return out


def build_card(data: ReportData, verdict: Verdict | None = None) -> Card:
    """Every claim for the run in `data` (`verdict`: the report's, when it has computed one).

    Without a verdict, it is computed here the way the report computes it, from the variants *and*
    their per-example predictions: without them claim 4 could never be paired (`--compare`).
    """
    pre = _pretrain(data)
    pre_rows = [r for r in pre.get("models", []) if isinstance(r, dict)]
    curves = run_curves(data)
    variants = [dict(r) for r in data.variants]
    names = [r["model"] for r in pre_rows if r.get("model")] + list(curves) + [str(r["model"]) for r in variants if r.get("model")]
    sizes = order_sizes(names, pre_rows, variants)
    replicas = replica_curves(data.run_dir / "pretrain")
    claims = [
        claim_wallclock(sizes, curves, pre.get("time_budget_s"), replicas=replicas),
        claim_steps(sizes, curves, replicas=replicas),
        claim_compression(sizes, variants, data.run_dir, REPORTING_SPLIT),
        claim_frontier(variants, verdict if verdict is not None or not variants
                       else train_large_verdict(variants, data.predictions)),
        claim_errors(sizes, data.error_json),
        *not_in_single_run(),  # claims 6 and 7 compare runs: a sweep's report measures them
    ]
    return Card(run=data.name, run_dir=str(data.run_dir), claims=claims, split=REPORTING_SPLIT)
