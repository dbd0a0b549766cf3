"""Own codes on integer kernels vs fp32 and ORT's own INT8, interleaved in one process (ONNX Runtime CPU).

    python -m runtime_bench.own_codes_speed [--layers 4 --hidden 192 --seq 128 --batches 1 32 --rounds 60 --threads 2]

One pre-LN RoBERTa classifier (the quickstart's largest size by default; random weights: speed does not
depend on them) is quantized by the compress stage's quantizer on the recipe's default grid (per-tensor
asymmetric, 8 and 4 bits, integer zero points: `compress.quantize.zero_point: integer`) and on the paper's
exact grid (q0 = min W, `zero_point: paper`), and exported as:

- `onnx-fp32`: the fused fp32 graph (what the export stage writes);
- `onnx-int8-dynamic`: ORT's `quantize_dynamic` of that graph (ORT's grid, not the variant's);
- `onnx-int8` (own codes, default grid): QAttention and DynamicQuantizeMatMul on the variant's 8-bit codes
  (`tlc_export.export.integer`);
- `onnx-int8-paper-zp` (own codes, the paper's grid): the same, plus the rank-1 term of the fractional zero
  point as an extra input feature per Q/K/V and FFN-up GEMM;
- `onnx-int4` (own codes, default grid): MatMulNBits with float zero points at `accuracy_level` 0 and 4, and
  the 4-bit codes widened to int8 at load;
- `onnx-int8-static`: ORT's static QDQ INT8 (TensorRT's form), to say whether it belongs on CPU.

Files are timed in turns (`metrics.interleaved_turns`: each round gives every file one turn per batch
size, in a rotating order; a turn is 50 ms of untimed calls, so that ORT's spinning idle threads of the
previous file are gone, then 100 ms of timed ones); sessions are pinned to `--threads` intra-op threads
and one inter-op thread.
Prints a table (p50, p90, ratios to int8-dynamic and fp32, file size), then one JSON line naming the CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime_bench.metrics import environment, interleaved_turns, paired_ratios
from tlc_export.rundir import cpu_model


def build_files(layers: int, hidden: int, vocab: int, seq: int, out: Path, static: bool) -> dict[str, Path]:
    import torch
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForSequenceClassification

    from tlc_export.compress.quantize import QuantConfig, quantize_
    from tlc_export.export import ort_quant
    from tlc_export.export.integer import INT4_KERNELS, integer_model
    from tlc_export.export.onnx_export import export_template, save_model
    from tlc_export.export.optimize import optimize_for_cpu
    from tlc_export.export.qdq import rewrite_weights
    from tlc_export.export.validate import Batch

    torch.manual_seed(0)
    heads = max(1, hidden // 64)
    cfg = RobertaPreLayerNormConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=seq + 2, num_labels=2, type_vocab_size=1,
    )
    model = RobertaPreLayerNormForSequenceClassification(cfg).eval()
    tpl = export_template(model, out / "graph.onnx")
    files: dict[str, Path] = {}
    raw = out / "fp32.unfused.onnx"
    proto = tpl.load()
    rewrite_weights(proto, tpl.refs, {}, model.state_dict())
    save_model(proto, raw)
    files["onnx-fp32"] = out / "onnx-fp32.onnx"
    optimize_for_cpu(raw, files["onnx-fp32"], heads, hidden)
    files["onnx-int8-dynamic"] = out / "onnx-int8-dynamic.onnx"
    ort_quant.quantize_int8_dynamic(files["onnx-fp32"], files["onnx-int8-dynamic"])
    # the recipe's default grid (per-tensor, asymmetric, integer zero point) at 8 and 4 bits; at 8 bits also the
    # paper's exact grid (q0 = min W: compress.quantize.zero_point: paper)
    for bits, integer_zp in ((8, True), (8, False), (4, True)):
        mq = copy.deepcopy(model)
        q = quantize_(mq, QuantConfig(bits=bits, integer_zero_point=integer_zp))
        for kernel in (INT4_KERNELS if bits == 4 else (None,)):
            m, _, _ = integer_model(tpl.load(), tpl.refs, q, mq.state_dict(), heads, hidden,
                                    four_bit=bits == 4, int4_kernel=kernel or INT4_KERNELS[0])
            name = f"onnx-int{bits}" + ("" if kernel is None else f"-{kernel}") + ("" if integer_zp else "-paper-zp")
            files[name] = out / f"{name}.onnx"
            save_model(m, files[name])
    if static:
        rng = np.random.default_rng(1)
        cal = [Batch(rng.integers(3, vocab, size=(8, seq)).astype(np.int64), np.ones((8, seq), np.int64)) for _ in range(4)]
        files["onnx-int8-static"] = out / "onnx-int8-static.onnx"
        ort_quant.quantize_int8_static(raw, files["onnx-int8-static"], cal)
    return files


def _session(path: Path, threads: int):
    import onnxruntime as ort

    from tlc_export.export.session import cpu_session

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return cpu_session(path, so)


def interleaved(files: dict[str, Path], batches: list[int], seq: int, vocab: int, rounds: int, warmup: int,
                threads: int) -> list[dict[str, Any]]:
    """p50/p90 per (file, batch), timed in turns (`metrics.interleaved_turns`)."""
    sessions = {k: _session(p, threads) for k, p in files.items()}
    rng = np.random.default_rng(0)
    rows = []
    for b in batches:
        feeds = {"input_ids": rng.integers(3, vocab, size=(b, seq)).astype(np.int64),
                 "attention_mask": np.ones((b, seq), np.int64)}
        turns: dict[str, list[list[float]]] = {}
        times = interleaved_turns({k: (lambda s=s, f=feeds: s.run(None, f)) for k, s in sessions.items()}, rounds, warmup,
                                  turns=turns)
        paired = {ref: paired_ratios(turns, ref) for ref in ("onnx-int8-dynamic", "onnx-fp32")}
        for k, ts in times.items():
            ts = sorted(ts)
            rows.append({"format": k, "batch": b, "seq": seq, "p50_ms": statistics.median(ts),
                         "p90_ms": ts[min(len(ts) - 1, int(round(0.9 * (len(ts) - 1))))], "min_ms": ts[0],
                         "runs": len(ts), "file_bytes": files[k].stat().st_size,
                         # median over rounds of the per-round ratio, and its 95 % interval (metrics.paired_ratios)
                         "paired_vs_int8_dynamic": paired["onnx-int8-dynamic"][k],
                         "paired_vs_fp32": paired["onnx-fp32"][k]})
    for b in batches:
        by = {r["format"]: r for r in rows if r["batch"] == b}
        for r in by.values():
            r["vs_fp32"] = r["p50_ms"] / by["onnx-fp32"]["p50_ms"]
            r["vs_int8_dynamic"] = r["p50_ms"] / by["onnx-int8-dynamic"]["p50_ms"]
            r["size_vs_fp32"] = r["file_bytes"] / by["onnx-fp32"]["file_bytes"]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-static", action="store_true", help="leave out onnx-int8-static")
    a = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        files = build_files(a.layers, a.hidden, a.vocab, a.seq, Path(tmp), static=not a.no_static)
        build_s = time.perf_counter() - t0
        rows = interleaved(files, a.batches, a.seq, a.vocab, a.rounds, a.warmup, a.threads)
    cpu = cpu_model()
    t = Table(title=f"ONNX Runtime CPU, {a.layers}L-{a.hidden}H, seq {a.seq}, {a.threads} threads, {cpu}, "
                    f"{a.rounds} interleaved rounds")
    for c in ("format", "batch", "p50 ms", "p90 ms", "÷ int8-dynamic", "per round [95 %]", "÷ fp32", "per round [95 %]",
              "MB", "size ÷ fp32"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["format"], str(r["batch"]), f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['vs_int8_dynamic']:.2f}",
                  _paired(r["paired_vs_int8_dynamic"]), f"{r['vs_fp32']:.2f}", _paired(r["paired_vs_fp32"]),
                  f"{r['file_bytes'] / 1e6:.2f}", f"{r['size_vs_fp32']:.3f}")
    con = Console(width=200)
    con.print(t)
    verdict = _verdict(rows, a.batches)
    for line in verdict["lines"]:
        con.print(line)
    load = list(os.getloadavg())
    print(json.dumps({"bench": "own_codes_speed", "cpu": cpu, "threads": a.threads, "load_average": load,
                      "build_s": round(build_s, 1), "rows": rows, "checks": verdict["checks"],
                      "environment": environment(a.threads)}, default=str))
    return 0


def _paired(m: tuple[float, float, float]) -> str:
    return f"{m[0]:.2f} [{m[1]:.2f}, {m[2]:.2f}]"


def target(paired: tuple[float, float, float], limit: float) -> str:
    """"met" when the per-round ratio's 95 % interval lies at or below `limit`, "not met" when it lies above,
    else "inside the noise" (one-sided error ≤ 2.5 % each way: tests/unit/test_calibration.py)."""
    _, lo, hi = paired
    return "met" if hi <= limit else "not met" if lo > limit else "inside the noise"


def _verdict(rows: list[dict[str, Any]], batches: list[int]) -> dict[str, Any]:
    """The issue's targets (own INT8 ≤ 1.05× int8-dynamic, on the default grid and on the paper's; own INT4 ≤
    fp32), decided on the per-round ratios' intervals, and the static-INT8 sentence the bench owes the reader."""
    checks: dict[str, Any] = {}
    lines = []
    for b in batches:
        by = {r["format"]: r for r in rows if r["batch"] == b}
        checks[f"int8_own_vs_dynamic_b{b}"] = round(by["onnx-int8"]["vs_int8_dynamic"], 3)
        checks[f"int8_own_vs_dynamic_paired_b{b}"] = [round(v, 3) for v in by["onnx-int8"]["paired_vs_int8_dynamic"]]
        checks[f"int8_own_within_1.05_b{b}"] = target(by["onnx-int8"]["paired_vs_int8_dynamic"], 1.05)
        if "onnx-int8-paper-zp" in by:
            pzp = by["onnx-int8-paper-zp"]
            checks[f"int8_paper_zp_vs_dynamic_paired_b{b}"] = [round(v, 3) for v in pzp["paired_vs_int8_dynamic"]]
            checks[f"int8_paper_zp_within_1.05_b{b}"] = target(pzp["paired_vs_int8_dynamic"], 1.05)
        best4 = min((r for k, r in by.items() if k.startswith("onnx-int4")), key=lambda r: r["p50_ms"])
        checks[f"int4_own_best_b{b}"] = best4["format"]
        checks[f"int4_own_vs_fp32_b{b}"] = round(best4["vs_fp32"], 3)
        checks[f"int4_own_vs_fp32_paired_b{b}"] = [round(v, 3) for v in best4["paired_vs_fp32"]]
        checks[f"int4_own_within_fp32_b{b}"] = target(best4["paired_vs_fp32"], 1.0)
        if "onnx-int8-static" in by:
            st, dy = by["onnx-int8-static"], by["onnx-int8-dynamic"]
            checks[f"static_vs_dynamic_b{b}"] = round(st["p50_ms"] / dy["p50_ms"], 3)
            checks["static_size_vs_dynamic"] = round(st["file_bytes"] / dy["file_bytes"], 3)
    if "static_size_vs_dynamic" in checks:
        wins = all(checks[f"static_vs_dynamic_b{b}"] < 1 for b in batches) and checks["static_size_vs_dynamic"] < 1
        checks["static_offered_on_cpu"] = wins
        lines.append("onnx-int8-static " + ("is smaller and faster than int8-dynamic here." if wins else
                     "is not smaller and faster than int8-dynamic on this CPU: keep it for TensorRT "
                     "(static Q/DQ is TensorRT's rule), use int8-dynamic or the own-code files on CPU."))
    return {"checks": checks, "lines": lines}


if __name__ == "__main__":
    raise SystemExit(main())
