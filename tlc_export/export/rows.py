"""One export row's life in every family's export stage: attempted, recorded, reported.

A row starts with its identity and `status: ok`; the work's fields are merged in, or its failure is recorded
in the row (status `unavailable` for a missing runtime, `failed` otherwise, with the reason), never raised,
so one bad (variant, format) does not stop the others. Recorded rows are appended to the stage's
`rows.jsonl`, which a resumed stage reads back to skip them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tlc_export.atomic import append_jsonl
from tlc_export.errors import BackendUnavailable, ExportMismatchError, TlcError


def attempt(row: dict[str, Any], work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`row` updated with `work()`'s fields, or with why it failed (a mismatch also fills the row's
    `max_abs_diff` and `tolerance` when it has those fields)."""
    try:
        row.update(work())
    except BackendUnavailable as e:
        row.update(status="unavailable", reason=str(e))
    except ExportMismatchError as e:
        row.update(status="failed", reason=str(e))
        if "max_abs_diff" in row:
            row.update(max_abs_diff=e.outputs[0].max_abs_diff, tolerance=e.outputs[0].tolerance)
    except (TlcError, RuntimeError, ValueError, OSError) as e:
        row.update(status="failed", reason=f"{type(e).__name__}: {e}")
    return row


def record(row: dict[str, Any], rows_file: Path, done: dict[tuple[str, str], dict[str, Any]], console: Console,
           reason_chars: int = 200) -> dict[str, Any]:
    """Append `row` to `rows_file`, remember it in `done` by (variant, format), and print a row that is not ok."""
    append_jsonl(rows_file, row)
    done[(row["variant"], row["format"])] = row
    if row["status"] != "ok":
        console.print(f"[yellow]{row['variant']} {row['format']}: {row['status']}:[/yellow] "
                      f"{escape(str(row['reason'])[:reason_chars])}")
    return row
