"""The translation report's table rows and columns (the same rows feed index.html and summary.md).

Each column is (key, header, kind) as `report.html.table` takes it; BLEU and chrF are on their own
0-100 scale (kinds `pts`, `ci_pts`), storage in bytes (kind `mb`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tlc_export.report.data import compression_label

Row = dict[str, Any]
Columns = list[tuple[str, str, str]]

TRAINING_COLUMNS: Columns = [
    ("model", "size", "l"), ("params", "params", ""), ("steps", "steps", ""), ("tokens_per_s", "tokens/s", ""),
    ("final_dev_loss", "dev loss", ""), ("dev_bleu", "dev BLEU", "pts"), ("dev_bleu_ci", "dev 95 %", "ci_pts"),
    ("test_bleu", "test BLEU", "pts"), ("test_bleu_ci", "test 95 %", "ci_pts"),
    ("test_chrf", "test chrF", "pts"), ("test_chrf_ci", "chrF 95 %", "ci_pts"), ("test_n", "test sentences", ""),
    ("learned", "above copying the source", "l"),
]

VARIANT_COLUMNS: Columns = [
    ("variant", "variant", "l"), ("model", "size", "l"), ("compression", "compression", "l"), ("params", "params", ""),
    ("sparsity_reached", "sparsity reached", ""), ("bits", "bits", ""), ("storage_bytes", "storage MB", "mb"),
    ("dev_bleu", "dev BLEU", "pts"), ("dev_bleu_ci", "dev 95 %", "ci_pts"),
    ("test_bleu", "test BLEU", "pts"), ("test_bleu_ci", "test 95 %", "ci_pts"),
    ("test_chrf", "test chrF", "pts"), ("learned", "above copying the source", "l"),
    ("on_frontier", "Pareto (chosen on dev)", "l"), ("training_effect", "vs own uncompressed (test)", "l"),
]

ANSWER_COLUMNS: Columns = [
    ("budget_mb", "budget MB", ""), ("variant", "variant (chosen on dev)", "l"), ("compression", "compression", "l"),
    ("storage_mb", "storage MB", ""), ("dev_bleu", "dev BLEU", "pts"), ("dev_bleu_ci", "dev 95 %", "ci_pts"),
    ("test_bleu", "test BLEU", "pts"),
    ("test_bleu_ci", "test 95 %", "ci_pts"), ("runner_up", "runner-up (dev's second)", "l"),
    ("runner_up_bleu", "runner-up test BLEU", "pts"), ("mark", "vs runner-up on test (paired permutation test)", "l"),
]

SIZE_COLUMNS: Columns = [
    ("budget_mb", "budget MB", ""), ("large", "largest size (chosen on dev)", "l"), ("large_storage_mb", "MB", ""),
    ("large_test_bleu", "test BLEU", "pts"), ("large_test_bleu_ci", "test 95 %", "ci_pts"),
    ("small", "smallest size (chosen on dev)", "l"), ("small_storage_mb", "MB", ""),
    ("small_test_bleu", "test BLEU", "pts"), ("small_test_bleu_ci", "test 95 %", "ci_pts"),
    ("diff", "difference", "pts"), ("diff_ci", "difference 95 % (paired)", "ci_pts"), ("outcome", "largest size", "l"),
]

BENCH_COLUMNS: Columns = [
    ("variant", "variant", "l"), ("backend", "backend", "l"), ("format", "format", "l"), ("batch_size", "batch", ""),
    ("threads", "threads", ""), ("sentences", "sentences", ""), ("storage_bytes", "storage MB", "mb"),
    ("file_bytes", "file MB", "mb"), ("sentences_per_s", "sentences/s", ""), ("p50_ms", "p50 ms/sentence", ""),
    ("p90_ms", "p90 ms/sentence", ""), ("dev_bleu", "dev BLEU", "pts"), ("test_bleu", "test BLEU", "pts"),
    ("test_bleu_ci", "test 95 %", "ci_pts"), ("decoding", "decoding", "l"), ("status", "status", "l"),
]


def _batch(r: Row) -> int | None:
    b = r.get("batch_size", r.get("batch"))
    return None if b is None else int(b)


def batch_sizes(bench: Sequence[Row]) -> list[int]:
    return sorted({b for r in bench if (b := _batch(r)) is not None})


def file_columns(batches: Sequence[int]) -> Columns:
    """One row per deployable file: what it costs to store, how well it translates, how fast, per batch size."""
    cols: Columns = [("variant", "variant", "l"), ("format", "format", "l"), ("backend", "backend", "l"),
                     ("status", "status", "l"), ("storage_bytes", "storage MB", "mb"), ("file_bytes", "file MB", "mb"),
                     ("dev_bleu", "dev BLEU", "pts"), ("test_bleu", "test BLEU", "pts"), ("test_bleu_ci", "test 95 %", "ci_pts"),
                     ("bleu_source", "BLEU through", "l")]
    for b in batches:
        cols += [(f"b{b}_sentences_per_s", f"b{b} sentences/s", ""), (f"b{b}_p50_ms", f"b{b} p50 ms", ""),
                 (f"b{b}_p90_ms", f"b{b} p90 ms", "")]
    return cols + [("reason", "reason", "l")]


_SCORE_FIELDS = ("dev_bleu", "dev_bleu_ci", "test_bleu", "test_bleu_ci", "test_chrf", "test_chrf_ci")


def file_rows(exports: Sequence[Row], bench: Sequence[Row]) -> list[Row]:
    """Export rows joined with the bench rows of the same file (variant, format, run by onnxruntime), and
    bench-only rows (torch-eager: the compress artifact itself) grouped by (variant, backend, format).

    Every number in a row is of one model: storage and file size of that file, BLEU decoded from that file
    (the export row's through ONNX Runtime, else the bench row's through its runtime), latency timed on it.
    """
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in bench:
        groups.setdefault((str(r.get("variant")), str(r.get("backend")), str(r.get("format"))), []).append(r)
    out, used = [], set()
    for e in exports:
        key = (str(e.get("variant")), "onnxruntime", str(e.get("format")))
        used.add(key)
        out.append(_merge(e, groups.get(key, []), "onnxruntime"))
    for key, rows in groups.items():
        if key not in used:
            out.append(_merge(None, rows, key[1]))
    return out


def _merge(export: Row | None, timed: list[Row], backend: str) -> Row:
    first = timed[0] if timed else {}
    base = export or first
    row: Row = {"variant": base.get("variant"), "model": base.get("model"), "format": base.get("format"),
                "backend": backend,
                "status": base.get("status", "ok"), "reason": base.get("reason"),
                "storage_bytes": base.get("storage_bytes", first.get("storage_bytes")),
                "file_bytes": base.get("file_bytes", first.get("file_bytes"))}
    scored = next((r for r in ([export] if export else []) + timed if r.get("test_bleu") is not None), None)
    if scored is not None:
        row.update({k: scored.get(k) for k in _SCORE_FIELDS})
        row["bleu_source"] = ("onnxruntime (export)" if scored is export else str(scored.get("backend")))
    for r in timed:
        b = _batch(r)
        row.update({f"b{b}_sentences_per_s": r.get("sentences_per_s"), f"b{b}_p50_ms": r.get("p50_ms"),
                    f"b{b}_p90_ms": r.get("p90_ms")})
    return row


def learned(r: Row) -> str:
    """The row's trivial-baseline flag (`TranslationFamily.row_fields`: the source copied as its translation)."""
    flag = r.get("learned_task")
    if flag is None:
        return ""
    return "yes" if flag else f"NO (copy {float(r.get('copy_baseline_bleu') or 0):.2f}): did not learn the task"


def variant_rows(variants: Sequence[Row], frontier: set[str]) -> list[Row]:
    return [{**r, "compression": compression_label(r), "learned": learned(r),
             "on_frontier": "yes" if r.get("variant") in frontier else ""} for r in variants]
