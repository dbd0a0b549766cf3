"""`tlc predict`'s printer: piped output keeps every field of every row; on an 80-column terminal the label stays."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from tlc_export.serving.printer import TABLE_ROWS, print_records
from tlc_export.tasks.classification.serving.cli import columns

LABELS = ["negative", "positive"]
LONG = "an unusually long review that goes on and on about the plot, the acting, the music and the ending " * 2


def _records(n: int) -> list[dict]:
    return [{"text": f"{i} {LONG}", "label": LABELS[i % 2], "label_id": i % 2,
             "probabilities": {"negative": 0.25, "positive": 0.75}} for i in range(n)]


def _print(console: Console, recs: list[dict], output: Path | None = None) -> str:
    print_records(console, recs, columns(recs, LABELS), output=output, jsonl=False,
                  summary=lambda: ["summary line"], written="predictions")
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_piped_output_keeps_every_field_of_every_row() -> None:
    recs = _records(TABLE_ROWS + 5)
    out = _print(Console(file=io.StringIO(), width=80), recs)  # a StringIO is not a terminal
    lines = out.splitlines()
    assert lines[0].split("\t") == ["#", "text", "label", "P(negative)", "P(positive)"]
    rows = [line.split("\t") for line in lines[1:TABLE_ROWS + 6]]
    assert len(rows) == TABLE_ROWS + 5  # every row, not the terminal's first TABLE_ROWS
    for i, (r, rec) in enumerate(zip(rows, recs, strict=True)):
        assert r == [str(i + 1), rec["text"], rec["label"], "0.250", "0.750"]
    assert lines[-1] == "summary line"


def test_an_80_column_terminal_still_shows_the_label() -> None:
    recs = _records(3)
    out = _print(Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None), recs)
    table = [line for line in out.splitlines() if "0.750" in line]
    assert len(table) == 3
    for line, rec in zip(table, recs, strict=True):
        assert rec["label"] in line
        assert len(line) <= 80


def test_output_file_gets_json_lines_and_the_screen_the_summary(tmp_path: Path) -> None:
    recs = _records(2)
    out = _print(Console(file=io.StringIO(), width=300), recs, tmp_path / "p.jsonl")
    assert [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()] == recs
    assert out.splitlines() == ["summary line", f"predictions: {tmp_path / 'p.jsonl'}"]
