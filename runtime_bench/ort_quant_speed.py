"""ONNX Runtime fp32 vs INT8 dynamic quantization on a random-init pre-LN RoBERTa classifier.

    python -m runtime_bench.ort_quant_speed [--layers 4 --hidden 256 --batch 32 --seq 128 --runs 10 --threads 2]

Prints a table, then one JSON line (rows + environment + the int8/fp32 p50 ratio).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runtime_bench.harness import BenchSettings, Variant, bench_variant
from runtime_bench.metrics import environment


def build_files(layers: int, hidden: int, vocab: int, seq: int, out: Path) -> tuple[Path, Path]:
    import torch
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForSequenceClassification

    from tlc_export.export.onnx_export import export_onnx

    torch.manual_seed(0)
    cfg = RobertaPreLayerNormConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden, max_position_embeddings=seq + 2, num_labels=2,
    )
    model = RobertaPreLayerNormForSequenceClassification(cfg).eval()
    fp32 = out / "onnx-fp32.onnx"
    export_onnx(model, fp32)
    pre = out / "pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    int8 = out / "onnx-int8-dynamic.onnx"
    quantize_dynamic(str(pre), str(int8), weight_type=QuantType.QInt8)
    return fp32, int8


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = build_files(a.layers, a.hidden, a.vocab, a.seq, Path(tmp))
        s = BenchSettings(batches=[a.batch], seq_len=a.seq, warmup=a.warmup, runs=a.runs, threads=a.threads)
        rows = []
        for path in (fp32, int8):
            v = Variant(f"{a.layers}L-{a.hidden}H", path, format=path.stem, vocab_size=a.vocab, file_bytes=path.stat().st_size)
            rows += bench_variant(v, ["onnxruntime"], ["fp32"], s)
    t = Table(title=f"ONNX Runtime CPU, {a.layers}L-{a.hidden}H, batch {a.batch}, seq {a.seq}, {a.threads} threads")
    for c in ("format", "MB", "p50 ms", "p90 ms", "min ms", "seq/s", "spread"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["format"], f"{r['file_bytes'] / 1e6:.1f}", f"{r['latency_ms_p50']:.1f}", f"{r['latency_ms_p90']:.1f}",
                  f"{r['latency_ms_min']:.1f}", f"{r['throughput_seq_s']:.1f}", "yes" if r["spread_flag"] else "")
    Console().print(t)
    ratio = rows[0]["latency_ms_p50"] / rows[1]["latency_ms_p50"]
    Console().print(f"int8-dynamic speed-up over fp32 (p50): {ratio:.2f}×")
    print(json.dumps({"rows": rows, "fp32_over_int8_p50": ratio, "environment": environment(a.threads)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
