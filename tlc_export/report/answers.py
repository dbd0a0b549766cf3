"""The report's answers: best variant per storage / latency budget, and whether "train large, then
compress" won on this run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tlc_export.report.data import compression_label
from tlc_export.report.pareto import best_within, geometric_budgets


def _acc(r: dict[str, Any]) -> float:
    v = r.get("dev_accuracy", r.get("accuracy"))
    return float("nan") if v is None else float(v)


def _storage(r: dict[str, Any]) -> float:
    v = r.get("storage_bytes")
    return float("nan") if v is None else float(v)


def usable_variants(variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in variants if r.get("storage_bytes") and _acc(r) == _acc(r)]


def storage_answers(variants: list[dict[str, Any]], budgets_mb: list[float] | None) -> list[dict[str, Any]]:
    """For each storage budget: the most accurate variant that fits (dev accuracy picks it)."""
    pts = usable_variants(variants)
    if not pts:
        return []
    if budgets_mb:
        budgets = [b * 1e6 for b in budgets_mb]
    else:
        budgets = geometric_budgets(min(map(_storage, pts)), max(map(_storage, pts)), 5)
    out = []
    for b in budgets:
        best = best_within(pts, b, _storage, _acc)
        out.append({
            "budget_mb": b / 1e6,
            "variant": best["variant"] if best else None,
            "model": best.get("model") if best else None,
            "compression": compression_label(best) if best else None,
            "storage_mb": _storage(best) / 1e6 if best else None,
            "dev_accuracy": _acc(best) if best else None,
            "test_accuracy": best.get("test_accuracy") if best else None,
        })
    return out


def timed_rows(bench: list[dict[str, Any]], batch: int | None = None) -> list[dict[str, Any]]:
    return [
        r for r in bench
        if r.get("status") == "ok" and r.get("latency_ms_p50") is not None and r.get("accuracy") is not None
        and (batch is None or r.get("batch") == batch)
    ]


def latency_answers(bench: list[dict[str, Any]], budgets_ms: list[float] | None) -> tuple[int | None, list[dict[str, Any]]]:
    """For each p50 latency budget (at the smallest timed batch): the most accurate (variant, backend)."""
    timed = timed_rows(bench)
    if not timed:
        return None, []
    batch = min(r["batch"] for r in timed)
    pts = timed_rows(bench, batch)
    lat = [float(r["latency_ms_p50"]) for r in pts]
    budgets = list(budgets_ms) if budgets_ms else geometric_budgets(min(lat), max(lat), 4)
    out = []
    for b in budgets:
        best = best_within(pts, b, lambda r: float(r["latency_ms_p50"]), lambda r: float(r["accuracy"]))
        out.append({
            "budget_ms": b,
            "variant": best["variant"] if best else None,
            "format": best.get("format") if best else None,
            "backend": best.get("backend") if best else None,
            "dtype": best.get("dtype") if best else None,
            "latency_ms_p50": best["latency_ms_p50"] if best else None,
            "accuracy": best["accuracy"] if best else None,
        })
    return batch, out


@dataclass
class Verdict:
    """Did the largest model, compressed, beat the smallest lightly compressed one at <= its storage?

    Definition. S = the size with the fewest parameters, L = the size with the most. S's reference
    is its *lightly compressed* variant: the compressed variant (sparsity > 0 or bits < 32) with
    the most storage bytes, i.e. the mildest compression (the dense model if S has no compressed
    variant). "Train large, then compress" wins when some variant of L has storage_bytes <= the
    reference's and dev accuracy strictly above it; the witness is the smallest such variant (the
    most compressed winner). Dev accuracy decides (it is what the paper reports); test accuracy is
    shown next to it.
    """

    decided: bool
    won: bool
    sentence: str
    reference: dict[str, Any] | None = None
    witness: dict[str, Any] | None = None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def train_large_verdict(variants: list[dict[str, Any]]) -> Verdict:
    pts = usable_variants(variants)
    sizes: dict[str, int] = {}
    for r in pts:
        sizes[r["model"]] = max(sizes.get(r["model"], 0), int(r.get("params") or 0))
    if len(sizes) < 2:
        return Verdict(False, False, "Only one model size has results, so large vs. small cannot be compared on this run.")
    small = min(sizes, key=lambda m: (sizes[m], m))
    large = max(sizes, key=lambda m: (sizes[m], m))
    small_rows = [r for r in pts if r["model"] == small]
    compressed = [r for r in small_rows if float(r.get("sparsity") or 0) > 0 or int(r.get("bits") or 32) < 32]
    ref = max(compressed or small_rows, key=_storage)
    cands = [r for r in pts if r["model"] == large and _storage(r) <= _storage(ref)]
    winners = [r for r in cands if _acc(r) > _acc(ref)]
    ref_txt = (f"{small} at {compression_label(ref)} ({ref['variant']}, {_storage(ref) / 1e6:.2f} MB, "
               f"dev {_pct(_acc(ref))}, test {_pct(ref.get('test_accuracy'))})")
    if winners:
        w = min(winners, key=lambda r: (_storage(r), -_acc(r)))
        return Verdict(True, True, (
            f"Yes: train large, then compress won on this run. The largest model {large} compressed to "
            f"{compression_label(w)} ({w['variant']}, {_storage(w) / 1e6:.2f} MB) reaches dev {_pct(_acc(w))} "
            f"(test {_pct(w.get('test_accuracy'))}), above the smallest model {ref_txt} while using "
            f"{_storage(w) / _storage(ref):.2f}× its storage."), ref, w)
    if not cands:
        return Verdict(True, False, (
            f"No: train large, then compress did not win on this run. No variant of the largest model {large} "
            f"fits in the storage of the smallest model {ref_txt}; compress {large} harder (lower bits, higher "
            "sparsity) to make the comparison."), ref, None)
    best = max(cands, key=_acc)
    return Verdict(True, False, (
        f"No: train large, then compress did not win on this run. The best variant of the largest model {large} "
        f"within the storage of the smallest model {ref_txt} is {best['variant']} at dev {_pct(_acc(best))}, "
        f"{100 * (_acc(ref) - _acc(best)):.1f} points lower. With a short pretraining budget the large "
        "model may simply be undertrained."), ref, best)
