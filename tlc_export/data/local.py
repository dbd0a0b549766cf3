"""User-provided data: local text/CSV/JSON-lines files, read as streams of rows and documents."""

from __future__ import annotations

import glob
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tlc_export.errors import DataSourceError
from tlc_export.rows import delimited_rows, jsonl_rows

# A text file without blank lines would otherwise be one document as large as the file; past this
# many characters a document is cut at the next line break, so memory stays bounded.
MAX_DOCUMENT_CHARS = 1_000_000


def _readable(p: Path) -> bool:
    # Named pipes count: `mkfifo c.txt; zcat big.txt.gz > c.txt &` streams a compressed corpus.
    try:
        mode = p.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISFIFO(mode)


def resolve_glob(pattern: str, base_dir: Path, *, field: str) -> list[Path]:
    """Files matching `pattern` (relative to the recipe's folder), sorted for a stable order."""
    full = Path(pattern).expanduser()
    full = full if full.is_absolute() else base_dir / full
    files = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if _readable(Path(p)))
    if not files:
        raise DataSourceError(
            f"{field}: no file matches '{pattern}' (looked for {full}); fix the path, which is "
            "relative to the recipe file"
        )
    return files


def iter_text_blocks(path: Path) -> Iterator[str]:
    """A plain-text file's documents: each blank-line separated block, stripped, read line by line."""
    lines: list[str] = []
    size = 0
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    raise DataSourceError(f"{path}:{lineno}: not UTF-8 text ({exc}); convert the file to UTF-8") from None
                if line.strip():
                    lines.append(line)
                    size += len(line)
                    if size < MAX_DOCUMENT_CHARS:
                        continue
                if lines:
                    block = "\n".join(lines).strip()
                    lines, size = [], 0
                    if block:
                        yield block
            if lines:
                block = "\n".join(lines).strip()
                if block:
                    yield block
    except OSError as exc:
        raise DataSourceError(f"{path}: cannot read ({exc}); fix the `path`") from None


def read_text_documents(files: list[Path]) -> list[str]:
    """Plain-text files; each blank-line separated block is one document (small corpora, tests)."""
    return [doc for f in files for doc in iter_text_blocks(f)]


def iter_rows(path: Path, kind: str) -> Iterator[dict[str, Any]]:
    """Rows of a CSV (header row required) or JSON-lines file, one at a time."""
    if not _readable(path):
        raise DataSourceError(f"{path}: file not found; fix the `path` (relative to the recipe file)")
    if kind == "csv":
        with open(path, encoding="utf-8", newline="") as f:
            yield from (row for _, row in delimited_rows(f)[0])
        return
    with open(path, encoding="utf-8") as f:
        for _, row in jsonl_rows(f, path, DataSourceError):
            yield row


def read_rows(path: Path, kind: str) -> list[dict[str, Any]]:
    """All rows of a CSV or JSON-lines file (task data, which is small)."""
    return list(iter_rows(path, kind))


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


def load_hf_rows(name: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """Rows of a Hugging Face dataset split (finetune tasks: small; needs `datasets` and the hub)."""
    from tlc_export.data.hf import import_datasets

    datasets = import_datasets(f"hf dataset '{name}'")
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # the hub raises many types: connection, auth, missing config
        raise DataSourceError(
            f"hf dataset '{name}' (config {config!r}, split {split!r}) could not be loaded: "
            f"{type(exc).__name__}: {exc}. Check the name and access to the Hugging Face hub, or use "
            "a local csv/jsonl file"
        ) from None
    return [dict(r) for r in ds]
