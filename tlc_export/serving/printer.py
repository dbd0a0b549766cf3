"""`tlc predict`'s output for every family: JSON lines (`--jsonl`, `--output FILE`) or a table, then the
family's summary lines.

On a terminal the table is rich's, first `TABLE_ROWS` rows, wide text columns shrinking before the short
ones (the label stays visible at 80 columns). Piped or redirected (stdout not a terminal), it prints every
row as tab-separated fields under a header line, nothing cut: a file gets whole rows, not a table sized
for a screen.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

TABLE_ROWS = 50  # a longer input prints its first rows on a terminal; --output/--jsonl carry every row


@dataclass(frozen=True)
class Column:
    """One column: its header, its cell for a record, and how rich lays it out on a terminal."""

    header: str
    cell: Callable[[dict[str, Any]], str]
    style: dict[str, Any] = field(default_factory=dict)  # rich `add_column` options


def print_records(console: Console, records: Sequence[dict[str, Any]], columns: Sequence[Column], *,
                  output: Path | None, jsonl: bool, summary: Callable[[], list[str]], written: str,
                  show_lines: bool = False) -> None:
    """Write `records` as JSON lines to `output`, print them (`jsonl`: JSON lines; otherwise a table when no
    `output`), then, unless `jsonl`, the summary lines and where `output` went (`written`: what it holds)."""
    from tlc_export import atomic

    if output is not None:
        atomic.write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    if jsonl:
        for r in records:
            print(json.dumps(r, ensure_ascii=False))
    elif output is None:
        if console.is_terminal:
            console.print(_table(records, columns, show_lines))
            if len(records) > TABLE_ROWS:
                console.print(f"… {len(records) - TABLE_ROWS} more rows (write them all with --output FILE.jsonl)")
        else:
            out = console.file  # written as is: rich would expand the tabs, wrap and read markup
            for line in rows_text(records, columns):
                out.write(line + "\n")
    if not jsonl:
        for line in summary():
            console.print(line)
        if output is not None:
            console.print(f"{written}: {output}")


def rows_text(records: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[str]:
    """A header line and one line per record (numbered from 1), fields tab-separated and whole (tabs and line
    breaks inside a field become spaces)."""
    def clean(s: str) -> str:
        return " ".join(str(s).replace("\t", " ").splitlines())

    head = "\t".join(["#", *(c.header for c in columns)])
    return [head] + ["\t".join([str(i + 1), *(clean(c.cell(r)) for c in columns)]) for i, r in enumerate(records)]


def _table(records: Sequence[dict[str, Any]], columns: Sequence[Column], show_lines: bool) -> Table:
    t = Table(show_lines=show_lines)
    t.add_column("#", justify="right")
    for c in columns:
        t.add_column(c.header, **c.style)
    for i, r in enumerate(records[:TABLE_ROWS]):
        t.add_row(str(i + 1), *(c.cell(r) for c in columns))
    return t
