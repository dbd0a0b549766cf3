"""Reading rows of CSV / TSV / JSON-lines text: one reader for task data (`data.local`) and `tlc predict`
inputs (`serving.inputs`). Standard library only, so serving stays free of torch and pydantic."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def jsonl_rows(lines: Iterable[str], path: str | Path, error: type[Exception]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; `error` names the file and line of a line that is not
    one JSON object."""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{n}: not valid JSON ({e.msg}); one JSON object per line") from None
        if not isinstance(obj, dict):
            raise error(f"{path}:{n}: expected a JSON object per line, like {{\"text\": \"...\"}}, got "
                        f"{type(obj).__name__}")
        yield n, obj


def delimited_rows(lines: Iterable[str], delimiter: str = ",") -> tuple[Iterator[tuple[int, dict[str, Any]]], list[str]]:
    """(line number, row) for every data row of a CSV / TSV with a header row, and the header's columns."""
    reader = csv.DictReader(lines, delimiter=delimiter)
    columns = list(reader.fieldnames or [])
    return ((i + 2, dict(r)) for i, r in enumerate(reader)), columns
