"""Texts to classify or translate from a CSV, TSV, JSONL or plain-text file (`tlc predict --file`), with clear errors.

A .txt file holds one text per line, read as the column `text`; blank lines are skipped, and `skipped`
lists them so the CLI can say which output rows moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlc_export.errors import TlcError
from tlc_export.rows import delimited_rows, jsonl_rows

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}
TXT_COLUMN = "text"


class InputFileError(TlcError):
    """An input file cannot be read as texts; the message names the file, the line and the fix."""


@dataclass
class InputTable:
    """Texts (and optional second texts and gold labels) in file order; `lines[i]` is the line of row i."""

    texts: list[str]
    pairs: list[str | None] | None
    labels: list[Any] | None
    lines: list[int]
    skipped: list[int] = field(default_factory=list)  # lines of a .txt file left out because they are blank


def _text(path: Path) -> str:
    """The file as text, or a one-line error naming the line of the first byte that is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputFileError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8, "
                             f"e.g. `iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}`") from None


def _records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InputFileError(f"{path}: unknown file type {path.suffix!r}; use .csv, .tsv, .jsonl or .txt")
    text = _text(path)
    if kind == "txt":
        return [(n, {TXT_COLUMN: line}) for n, line in enumerate(text.splitlines(), start=1)], [TXT_COLUMN]
    if kind in ("csv", "tsv"):
        rows, columns = delimited_rows(text.splitlines(), delimiter="\t" if kind == "tsv" else ",")
        return list(rows), columns
    records, columns = [], []
    for n, obj in jsonl_rows(text.splitlines(), path, InputFileError):
        columns += [k for k in obj if k not in columns]
        records.append((n, obj))
    return records, columns


def read_inputs(path: str | Path, text_column: str = "text", pair_column: str | None = None,
                label_column: str | None = None, label_flag: str = "--label-column") -> InputTable:
    """Read `text_column` (and `pair_column`, `label_column` when given) from every row of `path`;
    `label_flag` is the option that named `label_column` (for the error message)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    records, columns = _records(path)
    if not records:
        raise InputFileError(f"{path}: no rows (no texts to run)")
    for flag, col in (("--text-column", text_column), ("--pair-column", pair_column), (label_flag, label_column)):
        if col is not None and col not in columns:
            raise InputFileError(f"{path}: no column {col!r} (columns: {', '.join(map(repr, columns)) or 'none'}); "
                                 f"pass {flag} with one of them")
    texts: list[str] = []
    pairs: list[str | None] = []
    labels: list[Any] = []
    skipped = [line for line, rec in records if path.suffix.lower() == ".txt" and not rec[TXT_COLUMN].strip()]
    records = [(line, rec) for line, rec in records if line not in set(skipped)]
    if not records:
        raise InputFileError(f"{path}: only blank lines (no texts to run)")
    for line, rec in records:
        value = rec.get(text_column)
        if not isinstance(value, str):
            raise InputFileError(f"{path}:{line}: {text_column!r} is {'missing' if value is None else type(value).__name__}, "
                                 "expected text")
        texts.append(value)
        if pair_column is not None:
            p = rec.get(pair_column)
            pairs.append(None if p is None else str(p))
        if label_column is not None:
            labels.append(rec.get(label_column))
    return InputTable(texts, pairs if pair_column else None, labels if label_column else None, [n for n, _ in records],
                      skipped)


def skipped_note(table: InputTable, path: str | Path | None) -> str | None:
    """What `tlc predict` says when blank lines were left out (so output rows no longer match input lines)."""
    if not table.skipped:
        return None
    shown = ", ".join(map(str, table.skipped[:10])) + (", …" if len(table.skipped) > 10 else "")
    return (f"{path}: skipped {len(table.skipped)} blank line(s) (line {shown}); the output has one row per "
            "non-blank line, in order")


def label_ids(values: Sequence[Any], names: Sequence[str], path: str | Path, lines: Sequence[int], column: str) -> list[int]:
    """Gold labels as ids: a label name of the bundle, or its integer id."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for v, line in zip(values, lines, strict=True):
        key = str(v).strip() if v is not None else ""
        if key in index:
            out.append(index[key])
        elif key.lstrip("-").isdigit() and 0 <= int(key) < len(names):
            out.append(int(key))
        else:
            raise InputFileError(f"{path}:{line}: {column!r} is {v!r}, not one of the bundle's labels "
                                 f"{list(names)} (or their ids 0..{len(names) - 1})")
    return out
