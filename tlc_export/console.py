"""The console the CLI prints with: rich tables on a terminal, full plain rows in a pipe or a file.

A rich table fits itself to the terminal's width, wrapping cells mid-word and cutting columns; in a pipe
(80 columns by default) that loses data. When stdout is not a terminal, every table is printed as
tab-separated rows instead (title, header, one line per row, markup removed) and long lines are not
wrapped, so `tlc status RUN | grep …` and `… > file` keep every field whole.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text


def _plain(cell: Any) -> str:
    if isinstance(cell, Text):
        text = cell.plain
    elif isinstance(cell, str):
        text = Text.from_markup(cell).plain
    else:
        text = str(cell)
    return " ".join(text.split())  # one line per row: tabs and line breaks inside a cell become spaces


def table_rows(table: Table) -> list[list[str]]:
    """The header and every row of a rich table as plain strings."""
    header = [_plain(c.header) for c in table.columns]
    columns = [[_plain(cell) for cell in c.cells] for c in table.columns]
    return [header, *[list(r) for r in zip(*columns, strict=True)]] if columns else [header]


def table_text(table: Table) -> str:
    lines = ([f"# {_plain(table.title)}"] if table.title else []) + ["\t".join(r) for r in table_rows(table)]
    return "\n".join(lines) + "\n"


class CliConsole(Console):
    """`Console` that prints tables as full tab-separated rows when its output is not a terminal."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if self.is_terminal:
            super().print(*objects, **kwargs)
            return
        kwargs.setdefault("soft_wrap", True)
        flat: list[Any] = []
        for o in objects:
            flat.extend(o.renderables if isinstance(o, Group) else [o])
        for o in flat:
            if isinstance(o, Table):  # written as is: rich would expand the tabs into spaces
                self.file.write(table_text(o))
                self.file.flush()
            else:
                super().print(o, **kwargs)
