"""What every family's bundle README and `tlc package` summary say the same way: an accuracy with its
interval, and why the bundle's variant was chosen."""

from __future__ import annotations

from typing import Any

# The opening of a README's torch-free Python example (onnxruntime + tokenizers + numpy).
PLAIN_PYTHON = ["```python", "import numpy as np", "import onnxruntime as ort", "from tokenizers import Tokenizer", ""]


def pct(acc: dict[str, Any] | None) -> str:
    if not acc or acc.get("accuracy") is None:
        return "n/a"
    ci = acc.get("ci")
    base = f"{100 * float(acc['accuracy']):.1f} %"
    n = f", n = {acc['n']}" if acc.get("n") else ""
    return f"{base} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]{n}" if ci else f"{base}{n}"


def selection_text(sel: dict[str, Any]) -> str:
    answer = sel.get("answer") or {}
    # A cheaper row that replaced the dev-best says so (`report.answers.prefer_cheaper`).
    why = f"; {answer['choice']}" if answer.get("preferred_over") and answer.get("choice") else ""
    if sel.get("by") == "max_storage_mb":
        return (f"the report's answer for a storage budget of {sel['budget_mb']:g} MB "
                f"(`tlc package RUN_DIR --max-storage-mb {sel['budget_mb']:g}`){why}; {answer.get('mark') or ''}".rstrip("; "))
    if sel.get("by") == "max_latency_ms":
        extra = "".join(f" --{k} {sel[k]}" for k in ("backend",) if sel.get(k))
        return (f"the report's answer for a p50 latency budget of {sel['budget_ms']:g} ms at batch {sel.get('batch')} "
                f"(`tlc package RUN_DIR --max-latency-ms {sel['budget_ms']:g}{extra}`){why}")
    return "named explicitly (`tlc package RUN_DIR --variant … --format …`)"


def dynamic_int8_note(meta: dict[str, Any], consequence: str) -> list[str]:
    """The README section on ONNX Runtime's per-batch activation scale, for an onnx-int8-dynamic bundle."""
    if meta.get("format") != "onnx-int8-dynamic":
        return []
    return ["", "## Note on dynamic INT8", "", f"ONNX Runtime's dynamic INT8 computes one activation scale per batch, {consequence}"]


def summary_head(meta: dict[str, Any], out: Any, what: str = "") -> list[str]:
    """The first lines `tlc package` prints: what was packaged where (`what`: more after the format), and why."""
    return [f"[bold green]packaged[/bold green] {meta['variant']} ({meta['format']}{what}) → {out}",
            f"  chosen as {selection_text(meta.get('selection') or {})}"]


def storage_mb(meta: dict[str, Any]) -> str:
    storage = meta.get("storage_bytes")
    return "n/a" if storage is None else f"{storage / 1e6:.3g} MB"
