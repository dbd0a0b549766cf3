"""The bundle's README.md: what the model is, and how to call it (Python, `tlc predict`, Triton)."""

from __future__ import annotations

import json
from typing import Any


def pct(acc: dict[str, Any] | None) -> str:
    if not acc or acc.get("accuracy") is None:
        return "n/a"
    ci = acc.get("ci")
    base = f"{100 * float(acc['accuracy']):.1f} %"
    n = f", n = {acc['n']}" if acc.get("n") else ""
    return f"{base} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]{n}" if ci else f"{base}{n}"


def selection_text(sel: dict[str, Any]) -> str:
    answer = sel.get("answer") or {}
    if sel.get("by") == "max_storage_mb":
        return (f"the report's answer for a storage budget of {sel['budget_mb']:g} MB "
                f"(`tlc package RUN_DIR --max-storage-mb {sel['budget_mb']:g}`); {answer.get('mark') or ''}".rstrip("; "))
    if sel.get("by") == "max_latency_ms":
        extra = "".join(f" --{k} {sel[k]}" for k in ("backend",) if sel.get(k))
        return (f"the report's answer for a p50 latency budget of {sel['budget_ms']:g} ms at batch {sel.get('batch')} "
                f"(`tlc package RUN_DIR --max-latency-ms {sel['budget_ms']:g}{extra}`)")
    return "named explicitly (`tlc package RUN_DIR --variant … --format …`)"


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
        "```python",
        "import numpy as np",
        "import onnxruntime as ort",
        "from tokenizers import Tokenizer",
        "",
        f"labels = {json.dumps(labels)}",
        'tok = Tokenizer.from_file("tokenizer.json")',
        f"tok.enable_truncation({meta['max_length']})",
        f'tok.enable_padding(pad_id={meta["pad_token_id"]}, pad_token="{meta["pad_token"]}")',
        'sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])',
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
    if meta.get("format") == "onnx-int8-dynamic":
        lines += ["", "## Note on dynamic INT8", "",
                  "ONNX Runtime's dynamic INT8 computes one activation scale per batch, so a text's logits (rarely its "
                  "label) depend on the other texts in its batch. The reported accuracy was measured with the same "
                  "length-sorted batches of 32 that `tlc predict` uses."]
    return "\n".join(lines) + "\n"


def bleu_text(score: dict[str, Any] | None, metric: str = "bleu") -> str:
    """`31.42 [30.1, 32.8], n = 927` from `{bleu, ci, n}`."""
    if not score or score.get(metric) is None:
        return "n/a"
    ci = score.get("ci")
    n = f", n = {score['n']}" if score.get("n") else ""
    return f"{float(score[metric]):.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") + n


def _mt_latency(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "not timed by the bench"
    return "; ".join(f"{r.get('backend')} batch {r.get('batch_size')}: p50 {float(r['p50_ms']):.3g} ms per sentence"
                     + (f", {float(r['sentences_per_s']):.3g} sentences/s" if r.get("sentences_per_s") else "")
                     for r in rows)


def render_translation_readme(meta: dict[str, Any]) -> str:
    """The README of a translation bundle (`tlc_export.tasks.translation.package.bundle`)."""
    bleu, chrf, var = meta.get("bleu") or {}, meta.get("chrf") or {}, meta.get("variant_bleu") or {}
    dec, tok = meta["decoding"], meta["tokenizer"]
    storage = meta.get("storage_bytes")
    src_lang, tgt_lang = meta.get("source_lang"), meta.get("target_lang")
    example = (meta.get("self_check") or {}).get("texts", ["In the beginning God created the heavens and the earth."])[0]
    recipe_dec = meta.get("recipe_decoding") or {}
    lines = [
        f"# {meta['variant']} — `{meta['format']}` translation bundle ({src_lang} → {tgt_lang})",
        "",
        f"A {meta.get('model')} Transformer encoder-decoder (MarianMT) from the tlc run `{meta['run'].get('recipe_name')}` "
        f"(recipe hash `{meta['run'].get('recipe_hash')}`), chosen as {selection_text(meta.get('selection') or {})}.",
        "",
        "| | |",
        "|---|---|",
        f"| languages | {src_lang} → {tgt_lang} |",
        f"| bits / sparsity | {meta.get('bits')} / {meta.get('sparsity')} |",
        f"| storage (the variant's packed size) | {'n/a' if storage is None else f'{storage / 1e6:.3g} MB'} |",
        f"| encoder.onnx + decoder.onnx | {meta['file_bytes'] / 1e6:.3g} MB |",
        f"| BLEU, test (95 % interval), this file, greedy | {bleu_text(bleu.get('test'))} |",
        f"| BLEU, dev | {bleu_text(bleu.get('dev'))} |",
        f"| chrF, test | {bleu_text(chrf.get('test'), 'chrf')} |",
        f"| the variant in PyTorch ({meta.get('variant_decoding') or recipe_dec.get('strategy') or '?'} decoding, "
        f"the report's figure), test / dev BLEU | {bleu_text(var.get('test'))} / {bleu_text(var.get('dev'))} |",
        f"| latency (bench) | {_mt_latency(meta.get('latency') or [])} |",
        f"| max lengths | source {dec['max_source_length']} tokens (longer input is truncated), translation "
        f"{dec['max_length']} tokens |",
        f"| sacrebleu | `{meta.get('bleu_signature')}` |",
        "",
        "Everything above, with the run's cache keys, checksums and runtime versions, is in `tlc.json`. The "
        "bundle decodes greedily (the loop below); the recipe's decoding was "
        f"{recipe_dec.get('strategy', '?')}"
        + (f" (beam {recipe_dec.get('num_beams')}, length penalty {recipe_dec.get('length_penalty')})"
           if recipe_dec.get("strategy") == "beam" else "") + ", which the PyTorch figure above used.",
        "",
        "## tlc predict",
        "",
        "```bash",
        f'tlc predict . "{example}"',
        "tlc predict . --file sentences.txt --output translations.jsonl      # one sentence per line",
        "tlc predict . --file pairs.jsonl --reference-column target --jsonl  # also prints BLEU against references",
        "```",
        "",
        "Sentences are sorted by length and translated in batches of `--batch-size` (32), each padded to its longest.",
        "",
        "## Python",
        "",
        "```python",
        "from tlc_export.tasks import open_predictor",
        "",
        'translator = open_predictor(".")  # onnxruntime + tokenizers + numpy, no torch',
        f'print(translator.translate(["{example}"]))',
        "```",
        "",
        "Or with nothing from tlc (`pip install onnxruntime tokenizers numpy`): the encoder runs once and also gives "
        "every decoder layer's cross-attention keys/values (`cross_k.<i>`, `cross_v.<i>`); the decoder runs once per "
        "output token with a KV cache (`past_k/v.<i>` in, `present_k/v.<i>` out), starting from `<pad>` and stopping at `</s>`.",
        "",
        "```python",
        "import numpy as np",
        "import onnxruntime as ort",
        "from tokenizers import Tokenizer",
        "",
        f'src = Tokenizer.from_file("{tok["source"]}/tokenizer.json")',
        f'tgt = Tokenizer.from_file("{tok["target"]}/tokenizer.json")',
        f"src.enable_truncation({dec['max_source_length']})",
        'enc = ort.InferenceSession("encoder.onnx", providers=["CPUExecutionProvider"])',
        'dec = ort.InferenceSession("decoder.onnx", providers=["CPUExecutionProvider"])',
        "",
        f'ids = np.array([src.encode("{example}").ids], dtype=np.int64)',
        "mask = np.ones_like(ids)",
        'outs = enc.run(None, {"input_ids": ids, "attention_mask": mask})',
        "names = [o.name for o in enc.get_outputs()][1:]",
        'feeds = {"attention_mask": mask, **dict(zip(names, outs[1:]))}',
        "for n in names:  # an empty self-attention cache per layer: [batch, heads, 0, head_dim]",
        "    shape = list(feeds[n].shape)",
        "    shape[2] = 0",
        '    feeds[n.replace("cross_", "past_", 1)] = np.zeros(shape, dtype=np.float32)',
        f"out = [{dec['decoder_start_token_id']}]",
        f"while len(out) < {dec['max_length']}:",
        '    res = dec.run(None, {**feeds, "decoder_input_ids": np.array([[out[-1]]], dtype=np.int64)})',
        "    for o, value in zip(dec.get_outputs()[1:], res[1:]):",
        '        feeds[o.name.replace("present_", "past_", 1)] = value',
        f"    nxt = {dec['eos_token_id']} if len(out) == {dec['max_length'] - 1} else int(res[0][0].argmax())",
        "    out.append(nxt)",
        f"    if nxt == {dec['eos_token_id']}:",
        "        break",
        "print(tgt.decode(out, skip_special_tokens=True).strip())",
        "```",
        "",
        "Batches pad the source with `<pad>` (id 0) and a 0 in the attention mask, and keep padding rows that "
        "finished with `</s>`.",
        "",
        "## Serving",
        "",
        "The greedy loop drives two graphs, so this bundle has no single-model Triton repository (a Triton "
        "deployment would wrap the loop in a Python or BLS model around these two ONNX files).",
    ]
    if meta.get("format") == "onnx-int8-dynamic":
        lines += ["", "## Note on dynamic INT8", "",
                  "ONNX Runtime's dynamic INT8 computes one activation scale per batch, so a sentence's translation can "
                  "depend on the other sentences in its batch."]
    return "\n".join(lines) + "\n"


def translation_summary(meta: dict[str, Any], out: Any) -> list[str]:
    """What `tlc package` prints after writing a translation bundle."""
    bleu = meta.get("bleu") or {}
    storage = meta.get("storage_bytes")
    sel = meta.get("selection") or {}
    lines = [f"[bold green]packaged[/bold green] {meta['variant']} ({meta['format']}, {meta.get('source_lang')} → "
             f"{meta.get('target_lang')}) → {out}",
             f"  chosen as {selection_text(sel)}"]
    if sel.get("skipped"):
        lines.append("  skipped (not exported): " + ", ".join(str(s["variant"]) for s in sel["skipped"]))
    lines += [f"  test BLEU {bleu_text(bleu.get('test'))}; dev {bleu_text(bleu.get('dev'))} (this file, greedy); storage "
              f"{'n/a' if storage is None else f'{storage / 1e6:.3g} MB'}; encoder + decoder {meta['file_bytes'] / 1e6:.3g} MB",
              f"  self-check: {(meta.get('self_check') or {}).get('translations', [''])[0]!r}",
              f"  try it: tlc predict {out} \"In the beginning God created the heavens and the earth.\""]
    return lines


def classification_summary(meta: dict[str, Any], out: Any) -> list[str]:
    """What `tlc package` prints after writing a classification bundle."""
    acc = meta.get("accuracy") or {}
    storage = meta.get("storage_bytes")
    lines = [f"[bold green]packaged[/bold green] {meta['variant']} ({meta['format']}) → {out}",
             f"  chosen as {selection_text(meta.get('selection') or {})}",
             f"  test accuracy {pct(acc.get('test'))}; dev {pct(acc.get('dev'))}; storage "
             f"{'n/a' if storage is None else f'{storage / 1e6:.3g} MB'}; model.onnx "
             f"{meta['model_file']['total_bytes'] / 1e6:.3g} MB"]
    opt = meta.get("graph_optimization") or {}
    if opt:
        lines.append("  graph: " + (f"fused ({', '.join(f'{v} {k}' for k, v in opt.get('fusions', {}).items())})"
                                    if opt.get("applied") else f"not fused ({opt.get('reason')})"))
    lines += [f"  Triton: {out / 'triton' / meta['name'] / 'config.pbtxt'}",
              f"  try it: tlc predict {out} \"a gorgeous, witty, seductive movie.\""]
    return lines
