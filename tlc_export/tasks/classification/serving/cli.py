"""`tlc predict`: read texts, run the bundle, print a table or write JSON lines (no torch)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from tlc_export.errors import TlcError
from tlc_export.serving.bundle import Bundle
from tlc_export.serving.inputs import InputTable, label_ids, read_inputs, skipped_note
from tlc_export.serving.predictor import Predictions, Predictor
from tlc_export.serving.printer import Column, print_records


def records(table: InputTable, labels: list[str], pred: Predictions, gold: list[int] | None) -> list[dict[str, Any]]:
    """One JSON-able dict per input, in input order."""
    out = []
    for i, text in enumerate(table.texts):
        rec: dict[str, Any] = {"text": text}
        if table.pairs is not None:
            rec["text_pair"] = table.pairs[i]
        k = int(pred.label_ids[i])
        rec.update(label=labels[k], label_id=k,
                   probabilities={name: round(float(p), 6) for name, p in zip(labels, pred.probabilities[i], strict=True)})
        if gold is not None:
            rec.update(gold_label=labels[gold[i]], correct=gold[i] == k)
        out.append(rec)
    return out


def columns(recs: list[dict[str, Any]], labels: list[str]) -> list[Column]:
    """text, label, P(each label) [, gold]: on a narrow terminal the text wraps, the other columns keep their width."""
    cols = [Column("text", lambda r: r["text"], {"overflow": "fold"}),  # wraps: the only column that may
            Column("label", lambda r: r["label"], {"style": "bold", "no_wrap": True,
                                                   "min_width": max((len(n) for n in labels), default=5)})]
    cols += [Column(f"P({name})", lambda r, n=name: f"{r['probabilities'][n]:.3f}",
                    {"justify": "right", "no_wrap": True, "min_width": len(name) + 3}) for name in labels]
    if recs and "gold_label" in recs[0]:
        cols.append(Column("gold", lambda r: r["gold_label"] + ("" if r["correct"] else " ✗"), {"no_wrap": True}))
    return cols


def run_predict(console: Console, bundle_dir: Path, texts: list[str], file: Path | None, text_column: str,
                pair_column: str | None, label_column: str | None, batch_size: int, threads: int | None,
                output: Path | None, jsonl: bool) -> list[dict[str, Any]]:
    from tlc_export import stats

    if bool(texts) == bool(file):
        raise TlcError("give the texts to classify as arguments, or --file FILE (not both)")
    if (pair_column or label_column) and not file:
        raise TlcError("--pair-column and --label-column read columns of --file")
    bundle = Bundle.open(bundle_dir)
    table = read_inputs(file, text_column, pair_column, label_column) if file else InputTable(texts, None, None, [])
    gold = label_ids(table.labels, bundle.labels, file or "", table.lines, label_column or "") if table.labels else None
    note = skipped_note(table, file)
    if note:  # stderr: stdout stays one JSON line per row under --jsonl
        Console(stderr=True).print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
    pred = Predictor(bundle, batch_size=batch_size, threads=threads).predict(table.texts, table.pairs)
    recs = records(table, bundle.labels, pred, gold)

    def summary() -> list[str]:
        counts = Counter(r["label"] for r in recs)
        head = f"{len(recs)} input(s) with {bundle.meta.get('variant', bundle.root.name)} ({bundle.meta.get('format', '?')}): "
        lines = [head + ", ".join(f"{n} {name}" for name, n in counts.most_common())]
        if gold is not None:
            acc = stats.accuracy_interval([r["correct"] for r in recs])
            lines.append(f"accuracy {100 * acc.accuracy:.2f} % [{100 * acc.ci_low:.1f}, {100 * acc.ci_high:.1f}] "
                         f"(95 % Wilson, n = {acc.n})")
        return lines

    print_records(console, recs, columns(recs, bundle.labels), output=output, jsonl=jsonl, summary=summary,
                  written="predictions")
    return recs
