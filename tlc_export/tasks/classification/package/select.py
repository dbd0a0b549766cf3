"""Which (variant, format) a bundle ships: named, or the report's answer for a storage / latency budget.

The budget answers come from `tlc_export.report.answer_tables`, the function the report renders its
answer tables with, called with the run recipe's `report.noninferiority_margin_points`, so
`tlc package --max-storage-mb X` ships the variant the report names for X (a smaller or faster one where
dev shows it costs at most that margin, `report.answers.prefer_cheaper`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlc_export.package.choice import (
    ONNX_RUNTIME_BACKEND,
    OWN_FORMAT,
    TENSORRT_BACKEND,
    Choice,
    PackageError,
    check_run_dir,
    check_selection,
    run_recipe,
)
from tlc_export.report.data import ReportData, load_report_data
from tlc_export.rundir import RunDir, stale_inputs
from tlc_export.tasks.base import TaskFamily


def check_run(run_dir: str | Path, order: Sequence[str]) -> RunDir:
    """A finished classification run: manifest, export results and a report at least as new as the bench
    (`order`: the family's stage names, in pipeline order)."""
    rd = check_run_dir(run_dir)
    root = rd.root
    records = rd.records()
    if not (root / "export" / "results.json").is_file():
        raise PackageError(f"{root / 'export' / 'results.json'}: missing; run `tlc export {root}` (or `tlc run`) first")
    rep = records.get("report")
    stale: set[str] = set()  # stages an input of which re-ran after them (`tlc export --formats`, `--force`)
    for name in order:
        rec = records.get(name)
        if rec is not None and rec.status == "done" and stale_inputs(rec, records, stale):
            stale.add(name)
    if "report" in stale:
        todo = [n for n in order if n in stale]
        raise PackageError(f"{root}: the report is stale (a stage it depends on re-ran after it); run "
                           + " then ".join(f"`tlc {n} {root}`" for n in todo))
    if rep is None or rep.status != "done" or not (root / "report" / "index.html").is_file():
        raise PackageError(f"{root}: the run has no report; run `tlc report {root}` first (a bundle follows the "
                           "report's answers and records them)")
    for stage in ("export", "bench"):
        up = records.get(stage)
        if up is not None and up.finished_at and rep.finished_at and up.finished_at > rep.finished_at:
            raise PackageError(f"{root}: the report is older than the {stage} results; run `tlc report {root} --force`")
    return rd


def report_margin(run_dir: str | Path) -> float:
    """The non-inferiority margin (accuracy, 0.01 = 1 point) the run's report chose its answers with: the run
    recipe's `report.noninferiority_margin_points` (the default where the recipe has no report section)."""
    from tlc_export.config.bench import ReportConfig

    return (run_recipe(run_dir).report or ReportConfig()).noninferiority_margin_points / 100


def _export_rows(root: Path) -> list[dict[str, Any]]:
    path = root / "export" / "results.json"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PackageError(f"{path}: not valid JSON ({e}); rerun `tlc export {root} --force`") from e
    from tlc_export.tasks.classification.package.on_demand import cached_rows

    rows = [r for r in (data.get("artifacts", []) if isinstance(data, dict) else data) if isinstance(r, dict)]
    have = {(r.get("variant"), r.get("format")) for r in rows}
    return rows + [r for r in cached_rows(root) if (r.get("variant"), r.get("format")) not in have]


def _format_for(variant: str, fmt: str | None, compress: dict[str, Any] | None, rows: list[dict[str, Any]]) -> str:
    if fmt:
        return fmt
    bits = int((compress or {}).get("bits") or 32)
    own = OWN_FORMAT.get(bits)
    if own is None:
        raise PackageError(f"variant {variant} ({bits}-bit) has no format that carries its own weights; pass --format "
                           f"(exported: {', '.join(sorted({r['format'] for r in rows})) or 'none'})")
    return own


def _pick(variant: str, fmt: str, root: Path, rows: list[dict[str, Any]], compress: dict[str, Any] | None,
          bench: list[dict[str, Any]], selection: dict[str, Any], export_missing: bool = True,
          family: TaskFamily | None = None) -> Choice:
    from tlc_export.tasks.classification.package.on_demand import export_one, producible_formats

    mine = [r for r in rows if r.get("variant") == variant]
    row = next((r for r in mine if r.get("format") == fmt), None)
    ok = sorted(r["format"] for r in mine if r.get("status") == "ok")
    bits = int((compress or {}).get("bits") or next((r.get("bits") for r in mine if r.get("bits")), 32))
    if row is None:
        can = producible_formats(bits, bool((compress or {}).get("tensorrt_int4")))
        if fmt not in can:
            raise PackageError(f"variant {variant} ({bits}-bit) has no {fmt} file: the export stage writes "
                               f"{', '.join(can) or 'nothing'} for a {bits}-bit variant; exported for it: "
                               f"{', '.join(ok) or 'none'}")
        if compress is None:
            raise PackageError(f"variant {variant}: not in {root / 'compress' / 'results.json'}; rerun the compress stage")
        if not export_missing:
            return Choice(variant, fmt, None, compress, [], selection)
        row = export_one(root, variant, fmt, str(compress["model"]), family=family)
        return Choice(variant, fmt, row, compress, [], {**selection, "exported_on_demand": True})
    if row.get("status") != "ok" or not row.get("path"):
        raise PackageError(f"{variant} {fmt}: export status {row.get('status')!r} ({row.get('reason') or 'no file'}); "
                           f"formats that exported: {', '.join(ok) or 'none'}")
    timed = [b for b in bench if b.get("variant") == variant and b.get("format") == fmt and b.get("status") == "ok"]
    return Choice(variant, fmt, row, compress, timed, selection)


def choose(
    run_dir: str | Path,
    *,
    variant: str | None = None,
    fmt: str | None = None,
    max_storage_mb: float | None = None,
    max_latency_ms: float | None = None,
    backend: str | None = None,
    batch: int | None = None,
    data: ReportData | None = None,
    export_missing: bool = True,
    family: TaskFamily | None = None,
    margin: float | None = None,
) -> Choice:
    """The one (variant, format) to package; raises PackageError naming the valid choices. A pair the run
    did not export is exported now (`on_demand.export_one`), or, with `export_missing=False`, returned
    with `export=None`. `family` (the run's) is what exporting on demand runs the export stage with.
    `margin` (accuracy, 0.01 = 1 point; None: the run recipe's, as its report used) is the budget answers'
    non-inferiority margin."""
    from tlc_export.report import answer_tables

    check_selection(variant, fmt, max_storage_mb, max_latency_ms, backend, batch,
                    latency_usage="--max-latency-ms Y [--backend B --batch N]", format_note=" (restrict it with --backend)")
    root = Path(run_dir)
    data = data or load_report_data(root)
    rows = _export_rows(root)
    by_variant = {r["variant"]: r for r in data.variants if r.get("variant")}
    known = sorted(set(by_variant) | {r["variant"] for r in rows if r.get("variant")})

    if variant is not None:
        if variant not in known:
            raise PackageError(f"unknown variant {variant!r}; this run has: {', '.join(known) or 'none'}")
        comp = by_variant.get(variant)
        return _pick(variant, _format_for(variant, fmt, comp, rows), root, rows, comp, data.bench, {"by": "variant"},
                     export_missing, family)

    if margin is None:
        margin = report_margin(root)
    if max_storage_mb is not None:
        if max_storage_mb <= 0:
            raise PackageError(f"--max-storage-mb must be > 0, got {max_storage_mb:g}")
        answer = answer_tables(data, storage_budgets_mb=[max_storage_mb], margin=margin).storage
        if not answer:
            raise PackageError(f"{root}: no variant has both a storage size and an accuracy; rerun the compress stage")
        a = answer[0]
        if a.get("variant") is None:
            smallest = min((r for r in data.variants if r.get("storage_bytes")), key=lambda r: r["storage_bytes"])
            raise PackageError(f"no variant fits in {max_storage_mb:g} MB; the smallest is {smallest['variant']} at "
                               f"{smallest['storage_bytes'] / 1e6:.3g} MB (raise --max-storage-mb)")
        comp = by_variant.get(a["variant"])
        sel = {"by": "max_storage_mb", "budget_mb": max_storage_mb, "answer": a}
        return _pick(a["variant"], _format_for(a["variant"], fmt, comp, rows), root, rows, comp, data.bench, sel,
                     export_missing, family)

    assert max_latency_ms is not None
    if max_latency_ms <= 0:
        raise PackageError(f"--max-latency-ms must be > 0, got {max_latency_ms:g}")
    timed = [r for r in data.bench if r.get("status") == "ok" and r.get("latency_ms_p50") is not None]
    if backend is not None and backend not in {r.get("backend") for r in timed}:
        raise PackageError(f"no timed bench rows for backend {backend!r}; timed backends: "
                           f"{', '.join(sorted({str(r.get('backend')) for r in timed})) or 'none'}")
    if batch is not None and batch not in {r.get("batch") for r in timed if backend in (None, r.get("backend"))}:
        raise PackageError(f"no timed bench rows at batch {batch}; timed batches: "
                           f"{', '.join(map(str, sorted({r.get('batch') for r in timed}))) or 'none'}")
    tables = answer_tables(data, latency_budgets_ms=[max_latency_ms], backend=backend, batch=batch, margin=margin)
    if not tables.latency:
        raise PackageError(f"{root}: the bench has no timed rows with an accuracy; rerun `tlc bench {root}`")
    a = tables.latency[0]
    if a.get("variant") is None:
        fastest = min(float(r["latency_ms_p50"]) for r in timed if (batch or tables.latency_batch) == r.get("batch")
                      and backend in (None, r.get("backend")))
        raise PackageError(f"nothing runs within {max_latency_ms:g} ms at batch {tables.latency_batch}; the fastest p50 "
                           f"is {fastest:.3g} ms (raise --max-latency-ms)")
    if a.get("backend") not in (ONNX_RUNTIME_BACKEND, TENSORRT_BACKEND):
        raise PackageError(f"the report's answer for ≤ {max_latency_ms:g} ms is {a['variant']} on {a.get('backend')} "
                           f"({a.get('format')}), which a bundle cannot ship (it serves ONNX Runtime or TensorRT files); "
                           f"pass --backend {ONNX_RUNTIME_BACKEND} to choose among ONNX Runtime rows")
    sel = {"by": "max_latency_ms", "budget_ms": max_latency_ms, "backend": backend, "batch": tables.latency_batch,
           "answer": a}
    return _pick(a["variant"], str(a["format"]), root, rows, by_variant.get(a["variant"]), data.bench, sel,
                 export_missing, family)
