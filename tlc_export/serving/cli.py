"""`tlc predict`: read texts, run the bundle, print a table or write JSON lines (no torch)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tlc_export.errors import TlcError
from tlc_export.serving.bundle import Bundle
from tlc_export.serving.inputs import InputTable, label_ids, read_inputs, skipped_note
from tlc_export.serving.predictor import Predictions, Predictor

TABLE_ROWS = 50  # a longer input prints its first rows and a summary; --output/--jsonl carry every row


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


def _table(recs: list[dict[str, Any]], labels: list[str], limit: int) -> Table:
    t = Table(show_lines=False)
    t.add_column("#", justify="right")
    t.add_column("text", overflow="ellipsis", max_width=60, no_wrap=True)
    t.add_column("label", style="bold")
    for name in labels:
        t.add_column(f"P({name})", justify="right", no_wrap=True, min_width=len(name) + 3)
    if recs and "gold_label" in recs[0]:
        t.add_column("gold")
    for i, r in enumerate(recs[:limit]):
        cells = [str(i + 1), r["text"], r["label"], *(f"{r['probabilities'][n]:.3f}" for n in labels)]
        if "gold_label" in r:
            cells.append(r["gold_label"] + ("" if r["correct"] else " ✗"))
        t.add_row(*cells)
    return t


def run_predict(console: Console, bundle_dir: Path, texts: list[str], file: Path | None, text_column: str,
                pair_column: str | None, label_column: str | None, batch_size: int, threads: int | None,
                output: Path | None, jsonl: bool) -> list[dict[str, Any]]:
    from tlc_export import atomic, stats

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
    if output is not None:
        atomic.write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    if jsonl:
        for r in recs:
            print(json.dumps(r, ensure_ascii=False))
    elif output is None:
        console.print(_table(recs, bundle.labels, TABLE_ROWS))
        if len(recs) > TABLE_ROWS:
            console.print(f"… {len(recs) - TABLE_ROWS} more rows (write them all with --output FILE.jsonl)")
    if not jsonl:
        counts = Counter(r["label"] for r in recs)
        head = f"{len(recs)} input(s) with {bundle.meta.get('variant', bundle.root.name)} ({bundle.meta.get('format', '?')}): "
        console.print(head + ", ".join(f"{n} {name}" for name, n in counts.most_common()))
        if gold is not None:
            acc = stats.accuracy_interval([r["correct"] for r in recs])
            console.print(f"accuracy {100 * acc.accuracy:.2f} % [{100 * acc.ci_low:.1f}, {100 * acc.ci_high:.1f}] "
                          f"(95 % Wilson, n = {acc.n})")
        if output is not None:
            console.print(f"predictions: {output}")
    return recs
