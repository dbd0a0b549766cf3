"""Serving bundles on ONNX Runtime CPU: graph optimization, INT8, and `tlc predict`'s overhead.

    python -m runtime_bench.serving_bundle [--layers 4 --hidden 256 --batch 32 --seq 128 --rounds 15 --threads 2]

One random-init pre-LN RoBERTa classifier, built with the export stage's own functions:
- `raw fp32`: the exporter's graph (`export_onnx`), what `onnx-fp32.unfused.onnx` holds;
- `bundle fp32`: `optimize_for_cpu` of it (pre-LN attention fusion + ORT's transformer optimizer),
  what a bundle's model.onnx holds for onnx-fp32;
- `ORT default int8`: ONNX Runtime's own `quantize_dynamic(raw, out, weight_type=QInt8)` with its
  defaults (every op type it knows, no pre-processing);
- `bundle int8`: `quantize_int8_dynamic` of the fused fp32 graph, what a bundle holds for
  onnx-int8-dynamic.
Latency: every file gets one session with the same options (`tlc predict`'s: default graph
optimizations, `--threads` intra-op threads) and the same random batch; the files are timed in
turns, round after round (`metrics.interleaved_turns`: load from other processes hits them alike, and
each turn starts after the previous file's spinning threads are gone), and the median per file is reported. Throughput: `tlc predict`'s `Predictor.predict` (tokenization, length
sort, padding, softmax included) against bare `InferenceSession.run` on the same batches, pre-
tokenized, on the INT8 bundle, interleaved the same way.

Prints a table, then one JSON line (files, latencies, the three checks, load average, environment).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from runtime_bench.metrics import environment, interleaved_turns

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
CHECKS = {"int8_speed": 1.0, "fp32_speedup": 1.15, "predict_throughput": 0.9}


def build_files(layers: int, hidden: int, vocab: int, seq: int, out: Path) -> dict[str, Path]:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForSequenceClassification

    from tlc_export.export.onnx_export import export_onnx
    from tlc_export.export.optimize import optimize_for_cpu
    from tlc_export.export.ort_quant import quantize_int8_dynamic

    torch.manual_seed(0)
    heads = max(1, hidden // 64)
    cfg = RobertaPreLayerNormConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=seq + 2, num_labels=2,
    )
    model = RobertaPreLayerNormForSequenceClassification(cfg).eval()
    with torch.no_grad():  # distinct values everywhere, as a trained model has (no shared zero biases)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    files = {"raw fp32": out / "raw-fp32.onnx", "bundle fp32": out / "bundle-fp32.onnx",
             "ORT default int8": out / "ort-default-int8.onnx", "bundle int8": out / "bundle-int8.onnx"}
    export_onnx(model, files["raw fp32"])
    opt = optimize_for_cpu(files["raw fp32"], files["bundle fp32"], heads, hidden)
    quantize_dynamic(str(files["raw fp32"]), str(files["ORT default int8"]), weight_type=QuantType.QInt8)
    quantize_int8_dynamic(files["bundle fp32"], files["bundle int8"])
    (out / "fusions.json").write_text(json.dumps(opt.to_dict()))
    return files


def make_bundle(model_file: Path, vocab: int, seq: int, out: Path) -> Path:
    """A bundle folder around `model_file` with a word-level tokenizer (one token per word)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from tokenizers.processors import TemplateProcessing

    from tlc_export.serving.bundle import sha256_file

    words = SPECIALS + [f"w{i}" for i in range(vocab - len(SPECIALS))]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.post_processor = TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                            special_tokens=[("<s>", 0), ("</s>", 2)])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
    (out / "config.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"}}))
    os.link(model_file, out / "model.onnx")
    (out / "tlc.json").write_text(json.dumps({"max_length": seq, "model_file": {
        "bytes": model_file.stat().st_size, "sha256": sha256_file(model_file)}}))
    return out


def texts_for(n: int, words_per_text: int, vocab: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab - len(SPECIALS), size=(n, words_per_text))
    return [" ".join(f"w{i}" for i in row) for row in ids]


def main(argv: list[str] | None = None) -> int:
    from tlc_export.serving import Bundle, Predictor
    from tlc_export.serving.predictor import session
    from tlc_export.tokens import length_batches, pad_batch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=15, help="rounds of turns: each file is timed in every round (metrics.interleaved_turns)")
    ap.add_argument("--throughput-batches", type=int, default=8, help="batches per throughput measurement")
    ap.add_argument("--throughput-rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    console = Console()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = build_files(a.layers, a.hidden, a.vocab, a.seq, tmp)
        fusions = json.loads((tmp / "fusions.json").read_text())
        rng = np.random.default_rng(0)
        ids = rng.integers(len(SPECIALS), a.vocab, size=(a.batch, a.seq), dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        sessions = {k: session(str(p), a.threads) for k, p in files.items()}
        samples = interleaved_turns({k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}, a.rounds,
                                    a.warmup)

        # tlc predict vs bare session.run on the INT8 bundle, same texts, same batches
        bundle = make_bundle(files["bundle int8"], a.vocab, a.seq, tmp / "bundle")
        predictor = Predictor(Bundle.open(bundle), batch_size=a.batch, threads=a.threads)
        n = a.batch * a.throughput_batches
        texts = texts_for(n, a.seq - 2, a.vocab)
        enc = predictor.tokenizer.encode(texts)
        batches = [pad_batch(enc, idx, predictor.tokenizer.pad_id) for idx in length_batches([len(x) for x in enc], a.batch)]
        assert all(b[0].shape == (a.batch, a.seq) for b in batches), "texts must fill batch × seq exactly"
        bare_sess = sessions["bundle int8"]
        predictor.predict(texts[: a.batch])
        bare, pred = [], []
        for _ in range(a.throughput_rounds):
            t0 = time.perf_counter()
            for x, m in batches:
                bare_sess.run(None, {"input_ids": x, "attention_mask": m})
            bare.append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            predictor.predict(texts)
            pred.append(n / (time.perf_counter() - t0))
        sizes = {k: p.stat().st_size for k, p in files.items()}
    load_after = os.getloadavg()

    p50 = {k: statistics.median(v) for k, v in samples.items()}
    rows = [{"file": k, "mb": sizes[k] / 1e6, "p50_ms": p50[k], "p90_ms": float(np.percentile(samples[k], 90)),
             "min_ms": min(samples[k]), "runs": len(samples[k])} for k in files]
    checks = {
        "int8_speed": {"what": "bundle int8 vs ORT default int8: p50 speed-up (≥ 1.0)",
                       "value": p50["ORT default int8"] / p50["bundle int8"], "target": CHECKS["int8_speed"]},
        "int8_size": {"what": "bundle int8 / ORT default int8 file size (≤ 1.0)",
                      "value": sizes["bundle int8"] / sizes["ORT default int8"], "target": 1.0, "at_most": True},
        "fp32_speedup": {"what": "bundle fp32 vs raw fp32 export: p50 speed-up (≥ 1.15)",
                         "value": p50["raw fp32"] / p50["bundle fp32"], "target": CHECKS["fp32_speedup"]},
        "predict_throughput": {"what": "tlc predict / bare InferenceSession.run throughput, int8 bundle (≥ 0.9)",
                               "value": statistics.median(pred) / statistics.median(bare),
                               "target": CHECKS["predict_throughput"]},
    }
    for c in checks.values():
        c["pass"] = c["value"] <= c["target"] if c.get("at_most") else c["value"] >= c["target"]

    title = (f"ONNX Runtime CPU, {a.layers}L-{a.hidden}H, batch {a.batch} × seq {a.seq}, {a.threads} threads, "
             f"{a.rounds} interleaved rounds (median)")
    t = Table(title=title)
    for c in ("file", "MB", "p50 ms", "p90 ms", "min ms"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["file"], f"{r['mb']:.2f}", f"{r['p50_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['min_ms']:.1f}")
    console.print(t)
    t2 = Table(title="checks")
    for c in ("check", "value", "target", ""):
        t2.add_column(c)
    for c in checks.values():
        t2.add_row(c["what"], f"{c['value']:.3f}", f"{'≤' if c.get('at_most') else '≥'} {c['target']:g}",
                   "[green]pass[/green]" if c["pass"] else "[red]FAIL[/red]")
    console.print(t2)
    console.print(f"throughput (texts/s, median of {a.throughput_rounds}): tlc predict {statistics.median(pred):.1f}, "
                  f"bare session.run {statistics.median(bare):.1f}")
    console.print(f"fused: {fusions['fusions']}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} on "
                  f"{os.cpu_count()} CPUs (a shared machine when the load exceeds the threads used)")
    print(json.dumps({"benchmark": "serving_bundle", "model": f"{a.layers}L-{a.hidden}H", "batch": a.batch, "seq": a.seq,
                      "threads": a.threads, "rounds": a.rounds, "rows": rows, "checks": checks,
                      "throughput_texts_s": {"tlc_predict": statistics.median(pred), "bare_session": statistics.median(bare)},
                      "fusions": fusions, "loadavg_before": load_before, "loadavg_after": load_after,
                      "environment": environment(a.threads)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
