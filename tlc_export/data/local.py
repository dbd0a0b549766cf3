"""User-provided data: local text/CSV/JSON-lines files and Hugging Face `datasets`."""

from __future__ import annotations

import csv
import glob
import json
import re
from pathlib import Path
from typing import Any

from tlc_export.errors import DataSourceError

_BLANK_LINES = re.compile(r"\n\s*\n")


def resolve_glob(pattern: str, base_dir: Path, *, field: str) -> list[Path]:
    """Files matching `pattern` (relative to the recipe's folder), sorted for a stable order."""
    full = Path(pattern).expanduser()
    full = full if full.is_absolute() else base_dir / full
    files = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
    if not files:
        raise DataSourceError(
            f"{field}: no file matches '{pattern}' (looked for {full}); fix the path, which is "
            "relative to the recipe file"
        )
    return files


def read_text_documents(files: list[Path]) -> list[str]:
    """Plain-text files; each blank-line separated block is one document."""
    docs: list[str] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataSourceError(f"{f}: not UTF-8 text ({exc}); convert it to UTF-8") from None
        docs.extend(b.strip() for b in _BLANK_LINES.split(text.replace("\r\n", "\n")) if b.strip())
    return docs


def read_rows(path: Path, kind: str) -> list[dict[str, Any]]:
    """Rows of a CSV (header row required) or JSON-lines file, as dicts."""
    if not path.is_file():
        raise DataSourceError(f"{path}: file not found; fix the `path` (relative to the recipe file)")
    if kind == "csv":
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataSourceError(f"{path}:{lineno}: invalid JSON ({exc.msg}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise DataSourceError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
            rows.append(row)
    return rows


def require_columns(rows: list[dict[str, Any]], columns: dict[str, str], where: str) -> None:
    """Fail naming the file, the missing column, the recipe field that names it, and what exists."""
    if not rows:
        raise DataSourceError(f"{where}: the file has no rows")
    present = set(rows[0])
    for field, column in columns.items():
        if column not in present:
            raise DataSourceError(
                f"{where}: no column '{column}' (from `{field}`); the file has columns "
                f"{sorted(present)}. Set `{field}` to one of them"
            )


def read_table_column(path: Path, kind: str, column: str, *, field: str) -> list[str]:
    rows = read_rows(path, kind)
    require_columns(rows, {field: column}, str(path))
    return [str(r[column]) for r in rows if r.get(column) not in (None, "")]


def load_hf_rows(name: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """Rows of a Hugging Face dataset split (needs the `datasets` package and the hub)."""
    try:
        import datasets  # optional dependency, imported only when used
    except ImportError:
        raise DataSourceError(
            f"hf dataset '{name}': the `datasets` package is not installed; `pip install "
            "'tlc-export[hf]'`, or export the data to a local csv/jsonl file and use `kind: csv`"
        ) from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # the hub raises many types: connection, auth, missing config
        raise DataSourceError(
            f"hf dataset '{name}' (config {config!r}, split {split!r}) could not be loaded: "
            f"{type(exc).__name__}: {exc}. Check the name and access to the Hugging Face hub, or use "
            "a local csv/jsonl file"
        ) from None
    return [dict(r) for r in ds]
