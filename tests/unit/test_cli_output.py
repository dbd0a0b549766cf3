"""Output a newcomer relies on: tables in a pipe keep every field whole (tab-separated rows, no
wrapping), and `scripts/tiny_data.py --help` prints help instead of writing a folder named `--help`."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from rich.table import Table

from tlc_export.console import CliConsole

ROOT = Path(__file__).resolve().parents[2]


def test_a_piped_table_prints_full_tab_separated_rows() -> None:
    t = Table(title="recipe fields")
    for col in ("field", "description"):
        t.add_column(col, overflow="fold")
    long = "Peak AdamW learning rate, or a list of them to try (the paper tunes it per size); " * 3
    t.add_row("finetune.lr", f"[bold]{long}[/bold]")
    out = io.StringIO()
    con = CliConsole(file=out, width=40)  # a file, not a terminal, and narrower than the row
    assert not con.is_terminal
    con.print(t)
    con.print("x " * 50)
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["# recipe fields", "field\tdescription", f"finetune.lr\t{long.strip()}"]
    assert lines[3].rstrip() == ("x " * 50).strip()  # long lines are not wrapped either


def test_tiny_data_help_writes_nothing(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "tiny_data.py"), "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "usage: python scripts/tiny_data.py" in p.stdout
    assert list(tmp_path.iterdir()) == []
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "tiny_data.py"), str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and (tmp_path / "d" / "task.csv").is_file()


def test_classification_lists_every_export_format_the_recipe_takes() -> None:
    from typing import get_args

    from tlc_export.config.export import ExportFormat
    from tlc_export.tasks import get_family

    assert get_family("classification").export_formats == get_args(ExportFormat)


def test_translation_lists_the_export_formats_its_recipes_take() -> None:
    from tlc_export.config.formats import TRANSLATION_EXPORT_FORMATS as EXPORT_FORMATS
    from tlc_export.tasks import get_family

    assert get_family("translation").export_formats == EXPORT_FORMATS
