"""`tlc predict` on a translation bundle: texts (or --file rows) in, translations out (no torch).

One JSON line per input (`--jsonl`, `--output FILE`): `{"text", "translation"}`, with `"reference"`
when `--reference-column` names the references; then the corpus BLEU and chrF (sacrebleu, 13a, with a
95 % bootstrap interval) of the translations against them are printed too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from tlc_export.errors import TlcError
from tlc_export.serving.inputs import InputTable, read_inputs, skipped_note
from tlc_export.serving.printer import Column, print_records
from tlc_export.tasks.translation.serving.translator import TranslationBundle, Translator


def records(table: InputTable, translations: list[str]) -> list[dict[str, Any]]:
    """One JSON-able dict per input, in input order."""
    out = []
    for i, (text, hyp) in enumerate(zip(table.texts, translations, strict=True)):
        rec: dict[str, Any] = {"text": text, "translation": hyp}
        if table.labels is not None:
            rec["reference"] = "" if table.labels[i] is None else str(table.labels[i])
        out.append(rec)
    return out


def columns(recs: list[dict[str, Any]]) -> list[Column]:
    """text, translation [, reference], folded over several lines on a terminal."""
    fold = {"overflow": "fold", "ratio": 1}
    cols = [Column("text", lambda r: r["text"], fold),
            Column("translation", lambda r: r["translation"], {"style": "bold", **fold})]
    if recs and "reference" in recs[0]:
        cols.append(Column("reference", lambda r: r["reference"], fold))
    return cols


def run_translate(console: Console, bundle_dir: Path, texts: list[str], file: Path | None, *, text_column: str = "text",
                  reference_column: str | None = None, batch_size: int = 32, threads: int | None = None,
                  output: Path | None = None, jsonl: bool = False) -> list[dict[str, Any]]:
    if bool(texts) == bool(file):
        raise TlcError("give the texts to translate as arguments, or --file FILE (.txt, .jsonl, .csv, .tsv; not both)")
    if reference_column and not file:
        raise TlcError("--reference-column reads a column of --file")
    bundle = TranslationBundle.open(bundle_dir)
    table = (read_inputs(file, text_column, label_column=reference_column, label_flag="--reference-column") if file
             else InputTable(texts, None, None, []))
    note = skipped_note(table, file)
    if note:  # stderr: stdout stays one JSON line per row under --jsonl
        Console(stderr=True).print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
    hyps = Translator(bundle, batch_size=batch_size, threads=threads).translate(table.texts)
    recs = records(table, hyps)

    def summary() -> list[str]:
        m = bundle.meta
        lines = [f"{len(recs)} sentence(s) translated {m.get('source_lang', '?')} → {m.get('target_lang', '?')} with "
                 f"{m.get('variant', bundle.root.name)} ({m.get('format', '?')}, greedy)"]
        if table.labels is not None:
            from tlc_export.tasks.translation.metrics import score_translations

            s = score_translations(hyps, [r["reference"] for r in recs])
            ci = f" [{s.bleu_ci[0]:.2f}, {s.bleu_ci[1]:.2f}]" if s.bleu_ci else ""
            lines.append(f"BLEU {s.bleu:.2f}{ci}, chrF {s.chrf:.2f} (n = {s.n}; {s.bleu_signature})")
        return lines

    print_records(console, recs, columns(recs), output=output, jsonl=jsonl, summary=summary, written="translations",
                  show_lines=True)
    return recs
