"""What every family's bundle writer shares: checking `--out`, tlc.json's provenance header, the versions it
was made with, and finishing the folder (self-check, tlc.json, README)."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from tlc_export import __version__
from tlc_export.package.choice import Choice, PackageError
from tlc_export.rundir import RunDir
from tlc_export.serving.bundle import META_FILE, SCHEMA


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


def header(root: Path, choice: Choice, name: str, family: str | None = None) -> dict[str, Any]:
    """tlc.json's first fields: schema[, family], created_utc, tlc_version, name, run {dir, recipe_name,
    recipe_hash, cache_keys}, selection."""
    rd = RunDir(root)
    manifest = rd.load_manifest()
    head: dict[str, Any] = {"schema": SCHEMA}
    if family is not None:
        head["family"] = family
    head.update({
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tlc_version": __version__,
        "name": name,
        "run": {"dir": str(root.absolute()), "recipe_name": manifest.get("recipe_name"),
                "recipe_hash": manifest.get("recipe_hash"),
                "cache_keys": {k: r.cache_key for k, r in rd.records().items()}},
        "selection": choice.selection,
    })
    return head


def runtime(root: Path) -> dict[str, Any]:
    """tlc.json `runtime`: the export stage's recorded environment and the versions packaging ran with."""
    records = RunDir(root).records()
    return {"exported_with": (records["export"].environment if "export" in records else None),
            "packaged_with": versions("onnx", "onnxruntime", "tokenizers", "numpy", "tlc-export")}


def finish(tmp: Path, meta: dict[str, Any], self_check: Callable[[], dict[str, Any]],
           readme: Callable[[dict[str, Any]], str], ensure_ascii: bool = True) -> None:
    """Run the self-check on the bundle in `tmp` (opening it reads tlc.json, so a provisional one is written
    first), then write the final tlc.json (with `self_check`) and the README."""
    (tmp / META_FILE).write_text(json.dumps(meta, default=str))
    meta["self_check"] = self_check()
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str, ensure_ascii=ensure_ascii) + "\n")
    (tmp / "README.md").write_text(readme(meta))
