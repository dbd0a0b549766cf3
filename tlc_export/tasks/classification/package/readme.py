"""The README and the `tlc package` summary of a classification bundle."""

from __future__ import annotations

import json
from typing import Any

from tlc_export.package.readme import (
    PLAIN_PYTHON,
    dynamic_int8_note,
    pct,
    selection_text,
    storage_mb,
    summary_head,
)


def _latency(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "not timed by the bench (it times dense variants only, unless bench.latency_variants says otherwise)"
    return "; ".join(f"{r['backend']} {r.get('device') or ''} batch {r['batch']} × seq {r.get('seq_len')}: "
                     f"p50 {float(r['latency_ms_p50']):.3g} ms" for r in rows)


def render_readme(meta: dict[str, Any]) -> str:
    name = meta["name"]
    labels = meta["labels"]
    acc = meta.get("accuracy") or {}
    var_acc = meta.get("variant_accuracy") or {}
    opt = meta.get("graph_optimization") or {}
    fusions = ", ".join(f"{v} {k}" for k, v in (opt.get("fusions") or {}).items())
    opt_text = (f"fused for ONNX Runtime CPU ({fusions})" if opt.get("applied")
                else f"not fused ({opt.get('reason') or 'exported before graph optimization'})")
    engine = meta.get("tensorrt")
    storage = meta.get("storage_bytes")
    ids_example = "[[0, 4, 5, 2]]"
    lines = [
        f"# {meta['variant']} — `{meta['format']}` serving bundle",
        "",
        f"A {meta.get('model')} RoBERTa (pre-LN) classifier from the tlc run `{meta['run'].get('recipe_name')}` "
        f"(recipe hash `{meta['run'].get('recipe_hash')}`), chosen as {selection_text(meta.get('selection') or {})}.",
        "",
        "| | |",
        "|---|---|",
        f"| labels | {', '.join(f'`{x}`' for x in labels)} |",
        f"| bits / sparsity | {meta.get('bits')} / {meta.get('sparsity')} |",
        f"| storage (the variant's packed size) | {'n/a' if storage is None else f'{storage / 1e6:.3g} MB'} |",
        f"| model.onnx | {meta['model_file']['total_bytes'] / 1e6:.3g} MB, graph {opt_text} |",
        f"| accuracy, test (95 % interval) | {pct(acc.get('test'))} |",
        f"| accuracy, dev | {pct(acc.get('dev'))} |",
        f"| the variant in PyTorch (the report's figure), test / dev | {pct(var_acc.get('test'))} / {pct(var_acc.get('dev'))} |",
        f"| latency (bench) | {_latency(meta.get('latency') or [])} |",
        f"| max input length | {meta['max_length']} tokens (longer texts are truncated) |",
        "",
        "Everything above, with the run's cache keys and the runtime versions, is in `tlc.json`.",
        "",
        "## Python: onnxruntime + tokenizers (no torch)",
        "",
        *PLAIN_PYTHON,
        f"labels = {json.dumps(labels)}",
        'tok = Tokenizer.from_file("tokenizer.json")',
        f"tok.enable_truncation({meta['max_length']})",
        f'tok.enable_padding(pad_id={meta["pad_token_id"]}, pad_token="{meta["pad_token"]}")',
        "# ONNX Runtime 1.32's CPU SkipLayerNormalization is slower than the Add + LayerNormalization it would fuse",
        'sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"])',
        "",
        'enc = tok.encode_batch(["a gorgeous, witty, seductive movie.", "dull and far too long."])',
        "ids = np.array([e.ids for e in enc], dtype=np.int64)",
        "mask = np.array([e.attention_mask for e in enc], dtype=np.int64)",
        'logits = sess.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]',
        "probs = np.exp(logits - logits.max(-1, keepdims=True))",
        "probs /= probs.sum(-1, keepdims=True)",
        "for p in probs:",
        "    print(labels[int(p.argmax())], {name: round(float(x), 3) for name, x in zip(labels, p)})",
        "```",
        "",
        "`config.json` and the tokenizer files also load with `transformers.AutoConfig` / `AutoTokenizer` "
        "(4.x and 5.x), and the folder has the layout optimum's `ORTModelForSequenceClassification` reads.",
        "",
        "## tlc predict",
        "",
        "```bash",
        'tlc predict . "a gorgeous, witty, seductive movie."',
        "tlc predict . --file reviews.csv --text-column text --output predictions.jsonl",
        "```",
        "",
        "Inputs are sorted by length and run in batches of `--batch-size` (32), each padded to its longest row.",
        "",
        "## Triton Inference Server",
        "",
        f"`triton/` is a model repository with one model, `{name}` "
        f"(`{meta['triton']['platform']}`, `max_batch_size: {meta['triton']['max_batch_size']}`, dynamic batching).",
        "",
        "```bash",
        "docker run --rm -p 8000:8000 -p 8001:8001 -v \"$PWD/triton:/models\" \\",
        "  nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models",
        f"curl -s localhost:8000/v2/models/{name}/infer -d '{{\"inputs\": [",
        f"  {{\"name\": \"input_ids\", \"shape\": [1, 4], \"datatype\": \"INT64\", \"data\": {ids_example}}},",
        "  {\"name\": \"attention_mask\", \"shape\": [1, 4], \"datatype\": \"INT64\", \"data\": [[1, 1, 1, 1]]}]}'",
        "```",
        "",
        "Tokenize on the client as in the Python example above (Triton receives token ids), or with "
        "`tritonclient.http.InferenceServerClient(\"localhost:8000\").infer(...)`.",
    ]
    if engine:
        lines += ["", "## TensorRT engine", "",
                  f"`triton/{name}/1/model.plan` was built with TensorRT {engine.get('tensorrt_version')} on "
                  f"{(engine.get('built_on_gpu') or {}).get('name')} (compute capability "
                  f"{(engine.get('built_on_gpu') or {}).get('compute_capability')}). A plan runs only on that GPU model and "
                  "that TensorRT version: use the Triton release that ships it. `model.onnx` is the engine's ONNX "
                  f"source, for ONNX Runtime and `tlc predict`. GPU check: {engine.get('gpu_check')}."]
    lines += dynamic_int8_note(meta, "so a text's logits (rarely its label) depend on the other texts in its "
                               "batch. The reported accuracy was measured with the same length-sorted batches of 32 that "
                               "`tlc predict` uses.")
    return "\n".join(lines) + "\n"


def classification_summary(meta: dict[str, Any], out: Any) -> list[str]:
    """What `tlc package` prints after writing a classification bundle."""
    acc = meta.get("accuracy") or {}
    lines = [*summary_head(meta, out),
             f"  test accuracy {pct(acc.get('test'))}; dev {pct(acc.get('dev'))}; storage {storage_mb(meta)}; model.onnx "
             f"{meta['model_file']['total_bytes'] / 1e6:.3g} MB"]
    opt = meta.get("graph_optimization") or {}
    if opt:
        lines.append("  graph: " + (f"fused ({', '.join(f'{v} {k}' for k, v in opt.get('fusions', {}).items())})"
                                    if opt.get("applied") else f"not fused ({opt.get('reason')})"))
    lines += [f"  Triton: {out / 'triton' / meta['name'] / 'config.pbtxt'}",
              f"  try it: tlc predict {out} \"a gorgeous, witty, seductive movie.\""]
    return lines
