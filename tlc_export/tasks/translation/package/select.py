"""Which (variant, format) a translation bundle ships: named, or the best dev BLEU within a storage or latency budget.

The rule is the classification report's answer tables' (`tlc_export.report.answers`): among the
candidates that fit the budget, the best *dev* BLEU wins (ties: the smaller, then the name); test BLEU
is reported with its interval, never used to choose, and the pick is compared with its runner-up on
test by a paired bootstrap over sentences (`compare_translations`). Storage budgets rank the compress
variants (the variant in PyTorch with the recipe's decoding, what the report's BLEU-vs-storage table
shows) and ship the format that carries the variant's own weights; latency budgets rank the bench's
ONNX Runtime rows (the file itself, greedy), the only runtime a bundle ships. Translation has no
on-demand export: a variant the export stage left out is skipped (and recorded) for a budget, and an
error names the fix for `--variant`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlc_export.package.choice import (
    ONNX_RUNTIME_BACKEND,
    OWN_FORMAT,
    Choice,
    PackageError,
    check_run_dir,
    check_selection,
)
from tlc_export.rundir import RunDir

SELECT, REPORT = "dev", "test"


def _read(path: Path, fix: str) -> Any:
    if not path.is_file():
        raise PackageError(f"{path}: missing; {fix}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PackageError(f"{path}: not valid JSON ({e}); {fix}") from e


def _rows(data: Any, path: Path, fix: str) -> list[dict[str, Any]]:
    rows = data.get("artifacts", data.get("rows")) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise PackageError(f"{path}: expected a list of rows; {fix}")
    return [r for r in rows if isinstance(r, dict)]


def check_translation_run(run_dir: str | Path) -> RunDir:
    """A translation run whose translation, compress and export stages have written their results."""
    rd = check_run_dir(run_dir)
    root = rd.root
    for stage, rel in (("translation", "translation/results.json"), ("compress", "compress/results.json"),
                       ("export", "export/results.json")):
        if not (root / rel).is_file():
            raise PackageError(f"{root / rel}: missing; run `tlc {stage} {root}` (or `tlc run`) first")
    return rd


def export_rows(root: Path) -> list[dict[str, Any]]:
    path = root / "export" / "results.json"
    return _rows(_read(path, f"rerun `tlc export {root} --force`"), path, f"rerun `tlc export {root} --force`")


def compress_rows(root: Path) -> list[dict[str, Any]]:
    path = root / "compress" / "results.json"
    return _rows(_read(path, f"rerun `tlc compress {root} --force`"), path, f"rerun `tlc compress {root} --force`")


def bench_rows(root: Path) -> list[dict[str, Any]]:
    """The bench's rows (bench/results.json, else bench/results.jsonl); [] before the bench ran."""
    path = root / "bench" / "results.json"
    if path.is_file():
        return _rows(_read(path, f"rerun `tlc bench {root} --force`"), path, f"rerun `tlc bench {root} --force`")
    lines = root / "bench" / "results.jsonl"
    if not lines.is_file():
        return []
    from tlc_export.atomic import read_jsonl

    return [r for r in read_jsonl(lines) if isinstance(r, dict)]


def own_format(variant: str, compress: dict[str, Any] | None) -> str:
    bits = int((compress or {}).get("bits") or 32)
    fmt = OWN_FORMAT.get(bits)
    if fmt is None:
        raise PackageError(f"variant {variant} ({bits}-bit) has no format that carries its own weights; pass --format")
    return fmt


def _score(r: dict[str, Any], split: str) -> float | None:
    v = r.get(f"{split}_bleu")
    return None if v is None else float(v)


def _ok_export(rows: list[dict[str, Any]], variant: str, fmt: str) -> dict[str, Any] | None:
    return next((r for r in rows if r.get("variant") == variant and r.get("format") == fmt
                 and r.get("status") == "ok" and r.get("folder")), None)


def _timed(bench: list[dict[str, Any]], variant: str, fmt: str) -> list[dict[str, Any]]:
    return [b for b in bench if b.get("variant") == variant and b.get("format") == fmt
            and b.get("backend") == ONNX_RUNTIME_BACKEND and b.get("status", "ok") == "ok"]


def _hypotheses(root: Path, row: dict[str, Any], split: str) -> tuple[list[str], list[str]] | None:
    rel = row.get("predictions")
    if not rel or not (root / rel).is_file():
        return None
    try:
        p = json.loads((root / rel).read_text()).get(split) or {}
    except (json.JSONDecodeError, AttributeError):
        return None
    if not p.get("hypotheses") or not p.get("references"):
        return None
    return list(p["hypotheses"]), list(p["references"])


def _variant(r: dict[str, Any]) -> str:
    return str(r.get("variant"))


def _variant_format(r: dict[str, Any]) -> str:
    return f"{r.get('variant')} {r.get('format')}"


def vs_runner_up(root: Path, best: dict[str, Any], ranked: list[dict[str, Any]],
                 label: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """The pick against the next the dev split ranks, on test: paired bootstrap over sentences."""
    out: dict[str, Any] = {"runner_up": None, "runner_up_test_bleu": None, "vs_runner_up": None,
                           "vs_runner_up_p": None, "vs_runner_up_diff_ci": None, "within_noise": None, "mark": ""}
    if len(ranked) < 2:
        out["mark"] = "only candidate"
        return out
    ru = ranked[1]
    out.update(runner_up=label(ru), runner_up_test_bleu=_score(ru, REPORT))
    a, b = _hypotheses(root, best, REPORT), _hypotheses(root, ru, REPORT)
    if a is None or b is None or a[1] != b[1]:
        out["mark"] = "no paired test (predictions missing)"
        return out
    from tlc_export.tasks.translation.metrics import compare_translations

    cmp_ = compare_translations(a[0], b[0], a[1])
    out.update(vs_runner_up=cmp_.outcome, vs_runner_up_p=cmp_.p_value, vs_runner_up_diff_ci=[cmp_.diff_ci_low, cmp_.diff_ci_high],
               within_noise=None if cmp_.outcome == "not tested" else cmp_.outcome == "within noise",
               mark=f"{cmp_.outcome} vs {label(ru)} on {REPORT} (paired permutation test over sentences, "
                    f"p = {cmp_.p_value:.3g})")
    return out


def _by_variant(root: Path, compress: list[dict[str, Any]], exports: list[dict[str, Any]], bench: list[dict[str, Any]],
                variant: str, fmt: str | None) -> Choice:
    known = sorted({str(r["variant"]) for r in compress + exports if r.get("variant")})
    if variant not in known:
        raise PackageError(f"unknown variant {variant!r}; this run has: {', '.join(known) or 'none'}")
    comp = next((r for r in compress if r.get("variant") == variant), None)
    fmt = fmt or own_format(variant, comp)
    row = _ok_export(exports, variant, fmt)
    if row is None:
        mine = [r for r in exports if r.get("variant") == variant]
        ok = sorted(str(r["format"]) for r in mine if r.get("status") == "ok")
        bad = next((r for r in mine if r.get("format") == fmt), None)
        why = (f"export status {bad.get('status')!r} ({bad.get('reason') or 'no folder'})" if bad is not None
               else "not exported (add its sparsity / format to the recipe's export section and rerun "
                    f"`tlc export {root} --force`)")
        raise PackageError(f"{variant} {fmt}: {why}; formats exported for it: {', '.join(ok) or 'none'}")
    return Choice(variant, fmt, row, comp, _timed(bench, variant, fmt), {"by": "variant"})


def _by_storage(root: Path, compress: list[dict[str, Any]], exports: list[dict[str, Any]], bench: list[dict[str, Any]],
                budget_mb: float, fmt: str | None) -> Choice:
    if budget_mb <= 0:
        raise PackageError(f"--max-storage-mb must be > 0, got {budget_mb:g}")
    usable = [r for r in compress if r.get("variant") and r.get("storage_bytes")
              and _score(r, SELECT) is not None and _score(r, REPORT) is not None]
    if not usable:
        raise PackageError(f"{root / 'compress' / 'results.json'}: no variant has both a storage size and dev/test BLEU; "
                           "rerun the compress stage")
    fits = [r for r in usable if float(r["storage_bytes"]) <= budget_mb * 1e6]
    if not fits:
        smallest = min(usable, key=lambda r: float(r["storage_bytes"]))
        raise PackageError(f"no variant fits in {budget_mb:g} MB; the smallest is {smallest['variant']} at "
                           f"{float(smallest['storage_bytes']) / 1e6:.3g} MB (raise --max-storage-mb)")
    ranked = sorted(fits, key=lambda r: (-float(r[f"{SELECT}_bleu"]), float(r["storage_bytes"]), str(r["variant"])))
    skipped = []
    for r in ranked:
        f = fmt or own_format(str(r["variant"]), r)
        row = _ok_export(exports, str(r["variant"]), f)
        if row is not None:
            answer = {"variant": r["variant"], "model": r.get("model"), "storage_mb": float(r["storage_bytes"]) / 1e6,
                      "dev_bleu": r.get("dev_bleu"), "dev_bleu_ci": r.get("dev_bleu_ci"), "test_bleu": r.get("test_bleu"),
                      "test_bleu_ci": r.get("test_bleu_ci"), "candidates": len(ranked),
                      **vs_runner_up(root, r, ranked, _variant)}
            sel = {"by": "max_storage_mb", "budget_mb": budget_mb, "metric": "dev_bleu (the variant in PyTorch)",
                   "answer": answer, "skipped": skipped}
            return Choice(str(r["variant"]), f, row, r, _timed(bench, str(r["variant"]), f), sel)
        skipped.append({"variant": r["variant"], "dev_bleu": r.get("dev_bleu"), "reason": f"no exported {f} file"})
    raise PackageError(f"the variants within {budget_mb:g} MB ({', '.join(str(s['variant']) for s in skipped)}) have no "
                       f"exported file; export them (the recipe's export section) and rerun `tlc export {root} --force`")


def _by_latency(root: Path, compress: list[dict[str, Any]], exports: list[dict[str, Any]], bench: list[dict[str, Any]],
                budget_ms: float, backend: str | None, batch: int | None) -> Choice:
    if budget_ms <= 0:
        raise PackageError(f"--max-latency-ms must be > 0, got {budget_ms:g}")
    if backend not in (None, ONNX_RUNTIME_BACKEND):
        raise PackageError(f"a translation bundle ships ONNX Runtime files; --backend {backend} cannot be packaged "
                           f"(use --backend {ONNX_RUNTIME_BACKEND} or leave it out)")
    timed = [b for b in bench if b.get("backend") == ONNX_RUNTIME_BACKEND and b.get("status", "ok") == "ok"
             and b.get("p50_ms") is not None and _score(b, SELECT) is not None]
    if not timed:
        raise PackageError(f"{root / 'bench'}: no timed ONNX Runtime rows with a dev BLEU; run `tlc bench {root}` first")
    batches = sorted({int(b["batch_size"]) for b in timed if b.get("batch_size") is not None})
    use = batch if batch is not None else (batches[0] if batches else None)
    if use not in batches:
        raise PackageError(f"no timed rows at batch {batch}; timed batches: {', '.join(map(str, batches)) or 'none'}")
    at = [b for b in timed if b.get("batch_size") == use]
    fits = [b for b in at if float(b["p50_ms"]) <= budget_ms]
    if not fits:
        fastest = min(float(b["p50_ms"]) for b in at)
        raise PackageError(f"nothing translates within {budget_ms:g} ms per sentence at batch {use}; the fastest p50 is "
                           f"{fastest:.3g} ms (raise --max-latency-ms)")
    ranked = sorted(fits, key=lambda b: (-float(b[f"{SELECT}_bleu"]), float(b["p50_ms"]), str(b["variant"]), str(b["format"])))
    best = ranked[0]
    variant, fmt = str(best["variant"]), str(best["format"])
    row = _ok_export(exports, variant, fmt)
    if row is None:
        raise PackageError(f"the bench timed {variant} {fmt}, but {root / 'export' / 'results.json'} has no ok row for it; "
                           f"rerun `tlc export {root} --force`")
    answer = {"variant": variant, "format": fmt, "model": best.get("model"), "p50_ms": best.get("p50_ms"),
              "dev_bleu": best.get("dev_bleu"), "test_bleu": best.get("test_bleu"), "test_bleu_ci": best.get("test_bleu_ci"),
              "candidates": len(ranked),
              # the files' own translations (export rows, through ONNX Runtime) are what the bench timed
              **vs_runner_up(root, row, [_ok_export(exports, str(b["variant"]), str(b["format"])) or b for b in ranked],
                             _variant_format)}
    sel = {"by": "max_latency_ms", "budget_ms": budget_ms, "backend": ONNX_RUNTIME_BACKEND, "batch": use,
           "metric": "dev_bleu (the file through ONNX Runtime, greedy)", "answer": answer}
    comp = next((r for r in compress if r.get("variant") == variant), None)
    return Choice(variant, fmt, row, comp, _timed(bench, variant, fmt), sel)


def choose_translation(
    run_dir: str | Path,
    *,
    variant: str | None = None,
    fmt: str | None = None,
    max_storage_mb: float | None = None,
    max_latency_ms: float | None = None,
    backend: str | None = None,
    batch: int | None = None,
    export_missing: bool = True,  # noqa: ARG001 - accepted for the shared interface; translation never exports on demand
) -> Choice:
    """The one (variant, format) of a translation run to package; raises PackageError naming the valid choices."""
    check_selection(variant, fmt, max_storage_mb, max_latency_ms, backend, batch,
                    latency_usage="--max-latency-ms Y [--batch N]")
    root = check_translation_run(run_dir).root
    compress, exports, bench = compress_rows(root), export_rows(root), bench_rows(root)
    if variant is not None:
        return _by_variant(root, compress, exports, bench, variant, fmt)
    if max_storage_mb is not None:
        return _by_storage(root, compress, exports, bench, max_storage_mb, fmt)
    assert max_latency_ms is not None
    return _by_latency(root, compress, exports, bench, max_latency_ms, backend, batch)
