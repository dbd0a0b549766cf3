"""Running a sweep: one sub-run per point under one parent run directory, stages shared by cache key.

```
<parent>/manifest.json        {kind: "sweep", recipe_name, recipe_path, recipe_base_dir, sweep: sweep.json's content}
<parent>/sweep.json           {name, mode, fields, points: [{index, id, values, label}]}
<parent>/sweep.recipe.yaml    the sweep recipe as written
<parent>/stages/<stage>/<key>/  the stage store (tlc_export.store): every point's stage folders
<parent>/points/<id>/         a complete run directory per point; its stage folders link into stages/
<parent>/report/              the sweep report (tlc_export.report.sweep), merging the points that have results
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from tlc_export import atomic, distributed
from tlc_export.errors import TlcError
from tlc_export.rundir import RunDir
from tlc_export.store import PLAN_FILE, POINTS_DIR, STORE_DIR
from tlc_export.sweep.plan import Sweep, SweepPoint

RECIPE_COPY = "sweep.recipe.yaml"


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / PLAN_FILE).is_file()


def point_dir(parent: Path, point: SweepPoint) -> Path:
    return Path(parent) / POINTS_DIR / point.id


def open_parent(sweep: Sweep, parent: Path, recipe_path: Path | None) -> None:
    """Write the parent's plan, recipe copy and manifest (idempotent: every point's job may call it)."""
    parent.mkdir(parents=True, exist_ok=True)
    plan = sweep.to_json()
    atomic.write_json(parent / PLAN_FILE, plan)
    atomic.write_text(parent / RECIPE_COPY, sweep.text)
    meta: dict[str, Any] = {"kind": "sweep", "recipe_name": sweep.name, "sweep": plan,
                            "recipe_base_dir": str(sweep.base_dir.resolve())}
    if recipe_path is not None:
        meta["recipe_path"] = str(recipe_path.resolve())
    RunDir(parent).set_meta(**meta)


def open_point(sweep: Sweep, parent: Path, point: SweepPoint, recipe_path: Path | None) -> RunDir:
    """The point's run directory, linked to the parent's stage store and recorded as such."""
    root = point_dir(parent, point)
    root.mkdir(parents=True, exist_ok=True)
    rd = RunDir(root, store=parent / STORE_DIR)
    meta: dict[str, Any] = {
        "stage_store": os.path.relpath(parent / STORE_DIR, root),
        "sweep": {"parent": os.path.relpath(parent, root), "index": point.index, "id": point.id,
                  "values": point.values, "label": point.label()},
        "recipe_base_dir": str(sweep.base_dir.resolve()),
    }
    if recipe_path is not None:
        meta["recipe_path"] = str(recipe_path.resolve())
    rd.set_meta(**meta)
    return rd


@dataclass
class PointOutcome:
    point: SweepPoint
    status: str  # done | failed
    error: str | None = None


def run_sweep(
    sweep: Sweep,
    parent: Path,
    recipe_path: Path | None = None,
    points: list[int] | None = None,
    only: list[str] | None = None,
    force: list[str] | None = None,
    console: Console | None = None,
) -> list[PointOutcome]:
    """Run the chosen points (all by default) in order; a failed point does not stop the others.

    After the points, the parent's sweep report is rewritten from every point with results.
    """
    from tlc_export.runner import run_pipeline

    console = console or Console()
    chosen = [sweep.point(k) for k in points] if points is not None else sweep.points
    if distributed.is_distributed() and len(chosen) > 1:
        # After pretraining only rank 0 goes on; the others would wait at the next point's barrier for as
        # long as its finetune, compress … take.
        raise TlcError(f"under torchrun, run one sweep point per launch (--point K, 0 … {len(sweep.points) - 1}); "
                       "`tlc sweep list RECIPE` prints the commands")
    if distributed.is_main():
        open_parent(sweep, parent, recipe_path)
    outcomes = []
    for p in chosen:
        console.rule(f"[bold magenta]sweep point {p.index}/{len(sweep.points) - 1}: {p.id}")
        console.print(f"  {p.label()}")
        rd = open_point(sweep, parent, p, recipe_path) if distributed.is_main() else RunDir(
            point_dir(parent, p), store=parent / STORE_DIR)
        distributed.barrier()
        try:
            run_pipeline(p.recipe, rd, only=only, force=force, console=console)
            outcomes.append(PointOutcome(p, "done"))
        except TlcError as exc:
            if distributed.is_distributed():
                raise  # the other ranks cannot skip a point on their own
            console.print(f"[bold red]point {p.id} failed:[/bold red] {exc}", highlight=False)
            outcomes.append(PointOutcome(p, "failed", str(exc)))
    if distributed.is_main():
        from tlc_export.report.sweep import write_sweep_report

        write_sweep_report(parent, console=console)
    return outcomes


def sweep_commands(sweep: Sweep, recipe_path: Path, parent: Path) -> list[str]:
    """One `tlc run … --point K` per point (for a scheduler or torchrun per point), then the report."""
    import shlex

    r, d = shlex.quote(str(recipe_path)), shlex.quote(str(parent))
    lines = [f"tlc run {r} --run-dir {d} --point {p.index}    # {p.label()}" for p in sweep.points]
    lines.append(f"tlc report {d}    # the sweep report over every finished point")
    return lines
