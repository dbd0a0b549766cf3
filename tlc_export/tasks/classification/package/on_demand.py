"""Export one (variant, format) the run's export stage did not write, for a bundle.

The report answers over every compress variant, but a recipe may export only some sparsity levels
(`export.sparsity: []` in the quickstart). When the chosen variant has no file yet, `tlc package`
runs the export stage's own code for that one pair (same graph, same validation against PyTorch,
same accuracy measurement) into `RUN/package/export/`, a cache with the export folder's layout.
The run's own `export/` and its manifest are not touched, so the report stays current.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from tlc_export import integrity
from tlc_export.atomic import read_jsonl, write_json
from tlc_export.errors import TlcError
from tlc_export.rundir import RESOLVED_RECIPE, RunDir
from tlc_export.tasks.base import TaskFamily

CACHE = Path("package") / "export"
KEY_FILE = "cache_key.json"


class OnDemandExportError(TlcError):
    """A pair could not be exported for a bundle; the message says why."""


def _cache_key(rd: RunDir) -> dict[str, str | None]:
    """What the cached files were made from: the export stage's key covers its config and every upstream key."""
    rec = rd.records().get("export")
    return {"export": rec.cache_key if rec else None}


def cache_dir(rd: RunDir) -> Path:
    """RUN/package/export/, emptied first when the run's export inputs changed since it was filled."""
    out = rd.root / CACHE
    key_file = out / KEY_FILE
    want = _cache_key(rd)
    if out.exists() and (not key_file.is_file() or json.loads(key_file.read_text()) != want):
        shutil.rmtree(out)
    if not out.exists():
        out.mkdir(parents=True)
        write_json(key_file, want)
    return out


def cached_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of pairs exported on demand earlier, when still current and their file is there."""
    rd = RunDir(run_dir)
    out = rd.root / CACHE
    key_file = out / KEY_FILE
    if not key_file.is_file() or json.loads(key_file.read_text()) != _cache_key(rd):
        return []
    return [{**r, "exported_by": "tlc package"} for r in read_jsonl(out / "rows.jsonl")
            if r.get("status") == "ok" and r.get("path") and (rd.root / r["path"]).is_file()]


def producible_formats(bits: int, tensorrt_int4: bool = False) -> tuple[str, ...]:
    """The export formats the export stage writes for a variant of this bit width (`tensorrt_int4`: the
    variant's codes are on TensorRT's INT4 grid, the compress row's flag)."""
    from tlc_export.tasks.classification.stages.export import (
        FP_FORMATS,
        INT8_CODE_BITS,
        INT8_CODE_FORMATS,
    )

    if bits >= 32:
        return FP_FORMATS
    if bits in INT8_CODE_BITS:
        return INT8_CODE_FORMATS
    if bits == 4:
        return ("onnx-int4", "tensorrt-int4") if tensorrt_int4 else ("onnx-int4",)
    return ()


def export_one(run_dir: str | Path, variant: str, fmt: str, model: str, console: Console | None = None, *,
               family: TaskFamily | None = None) -> dict[str, Any]:
    """The export row of (variant, fmt), exported now into RUN/package/export/ (resumed if already there)."""
    from tlc_export.recipe import parse_recipe
    from tlc_export.stages.base import StageContext
    from tlc_export.tasks.classification.stages.export import ExportStage

    rd = RunDir(run_dir)
    root = rd.root
    resolved = root / RESOLVED_RECIPE
    base = rd.load_manifest().get("recipe_base_dir")
    recipe = parse_recipe(resolved.read_text(), file=str(resolved), base_dir=Path(base) if base else root)
    if family is None:
        raise OnDemandExportError(f"{variant} {fmt}: exporting on demand needs the run's task family (pass `family`)")
    if recipe.export is None or recipe.finetune is None:
        raise OnDemandExportError(f"{resolved}: the recipe has no export/finetune section, so {variant} {fmt} cannot be exported")
    out = cache_dir(rd)
    # The exported graph of this size is reusable as is (the slow dynamo export runs once per size).
    for name in ("graph.onnx", "graph.onnx.refs.json"):
        src, dst = root / "export" / model / name, out / model / name
        if src.is_file() and not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    console = console or Console(stderr=True)
    console.print(f"[bold]exporting {variant} {fmt}[/bold]: the run's export stage left it out (export.sparsity / "
                  f"export.formats); writing it to {out}")
    ctx = StageContext(recipe=recipe, run_dir=rd, out_dir=out, inputs={}, console=console,
                       options={"formats": [fmt], "variants": [variant]}, family=family)
    ExportStage().run(ctx)
    integrity.record_stage(out, "package")  # `tlc package` verifies what it ships against this record
    rows = json.loads((out / "results.json").read_text())
    row = next((r for r in rows if r.get("variant") == variant and r.get("format") == fmt), None)
    if row is None:
        raise OnDemandExportError(f"exporting {variant} {fmt} produced no row (see {out / 'rows.jsonl'})")
    if row.get("status") != "ok":
        raise OnDemandExportError(f"{variant} {fmt}: export {row.get('status')}: {row.get('reason')}")
    return {**row, "exported_by": "tlc package", "export_reason": "not among the run's exported variants/formats"}
