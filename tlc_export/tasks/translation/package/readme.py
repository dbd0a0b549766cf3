"""The README and the `tlc package` summary of a translation bundle."""

from __future__ import annotations

from typing import Any

from tlc_export.package.readme import (
    PLAIN_PYTHON,
    dynamic_int8_note,
    selection_text,
    storage_mb,
    summary_head,
)


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
        *PLAIN_PYTHON,
        f'src = Tokenizer.from_file("{tok["source"]}/tokenizer.json")',
        f'tgt = Tokenizer.from_file("{tok["target"]}/tokenizer.json")',
        f"src.enable_truncation({dec['max_source_length']})",
        "# ONNX Runtime 1.32's CPU SkipLayerNormalization is slower than the Add + LayerNormalization it would fuse",
        'opts = {"providers": ["CPUExecutionProvider"], "disabled_optimizers": ["SkipLayerNormFusion"]}',
        'enc = ort.InferenceSession("encoder.onnx", **opts)',
        'dec = ort.InferenceSession("decoder.onnx", **opts)',
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
    lines += dynamic_int8_note(meta, "so a sentence's translation can depend on the other sentences in its batch.")
    return "\n".join(lines) + "\n"


def translation_summary(meta: dict[str, Any], out: Any) -> list[str]:
    """What `tlc package` prints after writing a translation bundle."""
    bleu = meta.get("bleu") or {}
    sel = meta.get("selection") or {}
    lines = summary_head(meta, out, f", {meta.get('source_lang')} → {meta.get('target_lang')}")
    if sel.get("skipped"):
        lines.append("  skipped (not exported): " + ", ".join(str(s["variant"]) for s in sel["skipped"]))
    lines += [f"  test BLEU {bleu_text(bleu.get('test'))}; dev {bleu_text(bleu.get('dev'))} (this file, greedy); storage "
              f"{storage_mb(meta)}; encoder + decoder {meta['file_bytes'] / 1e6:.3g} MB",
              f"  self-check: {(meta.get('self_check') or {}).get('translations', [''])[0]!r}",
              f"  try it: tlc predict {out} \"In the beginning God created the heavens and the earth.\""]
    return lines
