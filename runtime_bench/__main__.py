"""`python -m runtime_bench ARTIFACT... [--backends ...] [--batch 1 32] [--seq 128] [--runs N]`.

Prints a table, then as its last line one JSON object: {"rows": [...], "environment": {...}}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from runtime_bench.artifacts import (
    artifact_kind,
    compatible_backends,
    default_format,
    vocab_size_of,
)
from runtime_bench.backends import BACKEND_NAMES
from runtime_bench.harness import BenchSettings, Variant, bench_variant
from runtime_bench.metrics import environment


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m runtime_bench", description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", type=Path, help=".onnx, .engine, compress .safetensors or HF model folder")
    ap.add_argument("--backends", nargs="+", choices=BACKEND_NAMES, help="default: every backend that can load the artifact's kind")
    ap.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    ap.add_argument("--device", default=None, help="torch: cpu|cuda; onnxruntime: cpu|cuda|tensorrt")
    return ap.parse_args(argv)


def rows_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="runtime_bench", show_lines=False)
    for col in ("variant", "backend", "dtype", "batch", "seq", "p50 ms", "p90 ms", "seq/s", "peak MB", "status"):
        t.add_column(col, justify="right" if col not in ("variant", "backend", "status") else "left")
    for r in rows:
        def f(key: str, fmt: str = "{:.2f}", r: dict[str, Any] = r) -> str:
            v = r.get(key)
            return "-" if v is None else fmt.format(v)

        status = r["status"] + (" ⚠ spread" if r.get("spread_flag") else "")
        if r["status"] != "ok" and r.get("reason"):
            status += f": {r['reason'][:60]}"
        t.add_row(
            r["variant"], r["backend"], r["dtype"], f("batch", "{}"), f("seq_len", "{}"),
            f("latency_ms_p50"), f("latency_ms_p90"), f("throughput_seq_s", "{:.1f}"),
            "-" if r.get("peak_mem_bytes") is None else f"{r['peak_mem_bytes'] / 2**20:.1f}", status,
        )
    return t


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=False)
    settings = BenchSettings(
        batches=args.batch, seq_len=args.seq, warmup=args.warmup, runs=args.runs,
        threads=args.threads, device=args.device,
    )
    rows: list[dict[str, Any]] = []
    for path in args.artifacts:
        try:
            kind = artifact_kind(path)
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            return 2
        if not path.exists():
            console.print(f"[red]{path}: not found[/red]")
            return 2
        usable = compatible_backends(kind)
        names = [b for b in (args.backends or usable) if b in usable]
        if not names:
            console.print(f"[yellow]{path}: none of {args.backends} can load a {kind} artifact ({', '.join(usable)} can)[/yellow]")
            continue
        v = Variant(variant=path.stem if kind != "torch" else path.name, source=path, format=default_format(path),
                    vocab_size=vocab_size_of(path))
        rows.extend(bench_variant(v, names, args.dtypes, settings))
    console.print(rows_table(rows))
    # The machine-readable result is the last line, whatever the table printed above.
    sys.stdout.flush()
    print(json.dumps({"rows": rows, "environment": environment(args.threads)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
