"""Greedy translation on CPU: our ONNX Runtime loop (encoder.onnx + the cached-step decoder.onnx) vs plain
transformers `generate` (greedy, its own KV cache) on the same Marian model.

    python -m runtime_bench.translation [--layers 3 --hidden 192 --vocab 3000 --src-len 24 --max-length 48
                                         --batches 1,32 --sentences 32 --rounds 5 --threads 2]

One Marian encoder-decoder built from a config (random weights: it never emits `</s>` early, so every
runtime decodes exactly `--max-length` tokens per sentence: the same work for all), exported with the export stage's own functions (`export_template` +
`write_variant`; `onnx-int8-dynamic` = `quantize_int8_dynamic` of both files). Each round times every
runtime in turn on the same `--sentences` random sources (interleaved, so load from other processes
hits them alike), at each batch size; the median over rounds is reported. Ratios, not absolute claims:
the machine may be shared. The token ids of our fp32 loop are checked against `generate`'s.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from runtime_bench.metrics import environment


def build(layers: int, hidden: int, vocab: int, max_length: int, out: Path):
    import torch
    from transformers import MarianConfig, MarianMTModel

    from tlc_export.export.ort_quant import quantize_int8_dynamic
    from tlc_export.tasks.translation.export import FILES, export_template, write_variant

    torch.manual_seed(0)
    cfg = MarianConfig(vocab_size=vocab, decoder_vocab_size=vocab, d_model=hidden, encoder_layers=layers,
                       decoder_layers=layers, encoder_attention_heads=max(1, hidden // 64),
                       decoder_attention_heads=max(1, hidden // 64), encoder_ffn_dim=4 * hidden, decoder_ffn_dim=4 * hidden,
                       activation_function="relu", max_position_embeddings=max_length + 2, scale_embedding=True,
                       pad_token_id=0, eos_token_id=1, forced_eos_token_id=1, decoder_start_token_id=0, dropout=0.0)
    model = MarianMTModel(cfg).eval()
    tpl = export_template(model, out / "template")
    write_variant(tpl, out / "fp32", model.state_dict())
    (out / "int8").mkdir()
    for f in FILES:
        quantize_int8_dynamic(out / "fp32" / f, out / "int8" / f)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--vocab", type=int, default=3000)
    ap.add_argument("--src-len", type=int, default=24)
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--sentences", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    import torch

    from tlc_export.tasks.translation.onnx import OrtTranslator
    from tlc_export.tasks.translation.timing import time_decode, torch_greedy

    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, a.vocab, size=(a.sentences, a.src_len)).astype(np.int64)
    ids[:, -1] = 1  # every source ends with </s>, as the tokenizer writes it
    mask = np.ones_like(ids)
    batches = [int(b) for b in a.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = build(a.layers, a.hidden, a.vocab, a.max_length, Path(tmp))
        ours = {name: OrtTranslator.open(Path(tmp) / name, threads=a.threads) for name in ("fp32", "int8")}
        runtimes = {
            "transformers generate (torch eager, KV cache)": torch_greedy(model, a.max_length),
            "ours: ONNX Runtime fp32": lambda i, m: ours["fp32"].greedy(i, m, a.max_length),
            "ours: ONNX Runtime int8-dynamic": lambda i, m: ours["int8"].greedy(i, m, a.max_length),
        }
        same = bool(np.array_equal(runtimes["transformers generate (torch eager, KV cache)"](ids[:4], mask[:4]),
                                   ours["fp32"].greedy(ids[:4], mask[:4], a.max_length)))
        per: dict[tuple[str, int], list[dict]] = {}
        for fn in runtimes.values():  # one untimed pass each
            fn(ids[:2], mask[:2])
        for _ in range(a.rounds):
            for b in batches:
                chunks = [(ids[i:i + b], mask[i:i + b]) for i in range(0, len(ids), b)]
                for name, fn in runtimes.items():
                    per.setdefault((name, b), []).append(time_decode(fn, chunks, warmup=0, runs=1))
    rows = []
    for (name, b), rs in per.items():
        rows.append({"runtime": name, "batch_size": b, "sentences": a.sentences, "rounds": a.rounds,
                     "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                     "sentences_per_s": statistics.median(r["sentences_per_s"] for r in rs),
                     "generated_tokens_per_sentence": rs[0]["generated_tokens_per_sentence"]})
    ref = {r["batch_size"]: r for r in rows if r["runtime"].startswith("transformers")}
    for r in rows:  # p50 ratios: a shared machine's stalls move means and throughput more than medians
        r["p50_speedup_vs_generate"] = ref[r["batch_size"]]["p50_ms"] / r["p50_ms"]
        r["throughput_ratio_vs_generate"] = r["sentences_per_s"] / ref[r["batch_size"]]["sentences_per_s"]
    t = Table(title=f"greedy translation, Marian {a.layers}L-{a.hidden}H vocab {a.vocab}, {a.max_length} tokens/sentence, "
                    f"{a.threads} threads (median of {a.rounds} rounds)")
    for c in ("runtime", "batch", "ms/sentence (p50)", "sentences/s", "p50 speed-up vs generate", "sentences/s vs generate"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["runtime"], str(r["batch_size"]), f"{r['p50_ms']:.1f}", f"{r['sentences_per_s']:.1f}",
                  f"{r['p50_speedup_vs_generate']:.2f}×", f"{r['throughput_ratio_vs_generate']:.2f}×")
    console = Console(width=160)
    console.print(t)
    console.print(f"our fp32 loop's token ids equal generate's: {same}")
    print(json.dumps({"rows": rows, "fp32_tokens_equal_generate": same,
                      "model": f"{a.layers}L-{a.hidden}H", "environment": environment(a.threads)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
