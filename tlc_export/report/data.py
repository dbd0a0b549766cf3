"""Everything the report shows, read from a run directory (missing parts are simply absent)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlc_export.atomic import read_jsonl
from tlc_export.errors import StageError
from tlc_export.predictions import SplitPredictions, load_predictions


@dataclass
class ReportData:
    run_dir: Path
    name: str = "experiment"
    variants: list[dict[str, Any]] = field(default_factory=list)  # compress/results.json rows
    exports: list[dict[str, Any]] = field(default_factory=list)  # export/results.json rows
    bench: list[dict[str, Any]] = field(default_factory=list)  # bench/results.jsonl rows
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # size -> curve points
    pretrain: list[dict[str, Any]] = field(default_factory=list)  # pretrain/results.json rows (epochs, warnings)
    environment: dict[str, Any] = field(default_factory=dict)
    error_png: bytes | None = None
    error_json: Any = None
    finetune: list[dict[str, Any]] = field(default_factory=list)  # finetune/results.json model rows
    majority: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> {label, accuracy, n}
    label_names: list[str] = field(default_factory=list)
    task_overlap: dict[str, Any] | None = None  # data/results.json: the task's dev/test n-grams in pretraining text
    # run-relative predictions path (a row's `predictions`) -> split -> per-example predictions
    predictions: dict[str, dict[str, SplitPredictions]] = field(default_factory=dict)


def _rows(path: Path, key: str) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    rows = data.get(key, []) if isinstance(data, dict) else data
    return [r for r in rows if isinstance(r, dict)]


def load_report_data(run_dir: str | Path, name: str = "experiment") -> ReportData:
    root = Path(run_dir)
    d = ReportData(run_dir=root, name=name)
    d.variants = _rows(root / "compress" / "results.json", "variants")
    d.exports = _rows(root / "export" / "results.json", "artifacts")
    d.bench = read_jsonl(root / "bench" / "results.jsonl")
    env = root / "bench" / "environment.json"
    if env.is_file():
        d.environment = json.loads(env.read_text())
    d.pretrain = _rows(root / "pretrain" / "results.json", "models")
    pre = root / "pretrain"
    if pre.is_dir():
        for curve in sorted(pre.glob("*/curves.jsonl")):
            pts = [p for p in read_jsonl(curve) if p.get("val_ppl") is not None]
            if pts:
                d.curves[curve.parent.name] = pts
    err_png = root / "compress" / "error_analysis.png"
    if err_png.is_file():
        d.error_png = err_png.read_bytes()
    err_json = root / "compress" / "error_analysis.json"
    if err_json.is_file():
        d.error_json = json.loads(err_json.read_text())
    data_results = root / "data" / "results.json"
    if data_results.is_file():
        d.task_overlap = json.loads(data_results.read_text()).get("task_overlap")
    ft = root / "finetune" / "results.json"
    if ft.is_file():
        meta = json.loads(ft.read_text())
        d.finetune = [r for r in meta.get("models", []) if isinstance(r, dict)]
        d.majority = meta.get("majority") or {}
        d.label_names = meta.get("label_names") or []
    for row in [*d.finetune, *d.variants, *d.exports, *d.bench]:
        rel = row.get("predictions")
        if rel and rel not in d.predictions:
            try:
                d.predictions[rel] = load_predictions(root / rel)
            except StageError:
                pass  # a missing file means no paired test for that row; the report says so
    return d


def epoch_notes(rows: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """('Epochs of the training split seen: 2L-128H 0.56 · …', the pretrain stage's epoch warnings)."""
    seen = [f"{r['model']} {float(r['epochs']):.2f}" for r in rows if r.get("epochs") is not None]
    summary = ("Epochs of the training split seen: " + " · ".join(seen)) if seen else None
    return summary, [str(r["epoch_warning"]) for r in rows if r.get("epoch_warning")]


def compression_label(row: dict[str, Any]) -> str:
    """`4b`, `60%`, `60%/4b`, `4b sym-g64` (a grid other than the recipe's main one), or `fp32` for
    the dense model (the paper's point labels)."""
    sp = float(row.get("sparsity") or 0.0)
    bits = int(row.get("bits") or 32)
    parts = []
    if sp > 0:
        parts.append(f"{round(sp * 100)}%")
    if bits < 32:
        parts.append(f"{bits}b" + (f" {row['grid']}" if row.get("grid") else ""))
    return "/".join(parts) or "fp32"
