"""What every family's bundle writer shares: checking `--out` and recording the versions it was made with."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from tlc_export.package.choice import PackageError


def versions(*names: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def check_out(out: Path, force: bool) -> None:
    """--out must be new, an empty folder, or (with --force) a folder to replace."""
    if out.exists() and not out.is_dir():
        raise PackageError(f"--out {out}: exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PackageError(f"--out {out}: folder is not empty; pass --force to replace it, or choose another path")
    if not out.parent.exists():
        raise PackageError(f"--out {out}: the parent folder {out.parent} does not exist")
