"""Runs stages in order through the run directory, skipping those whose cache key is unchanged."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console

from tlc_export import atomic, distributed
from tlc_export.errors import StageError, TlcError
from tlc_export.recipe import Recipe
from tlc_export.rundir import RESOLVED_RECIPE, RunDir, StageRecord, environment
from tlc_export.stages import all_stages
from tlc_export.stages.base import Stage, StageContext
from tlc_export.store import StageStore

# Stages every torchrun process takes part in; the rest run on rank 0 only.
_DISTRIBUTED_STAGES = {"pretrain", "translation"}


def default_run_dir(recipe: Recipe, recipe_path: str | Path) -> Path:
    return Path("runs") / Path(recipe_path).stem


def run_pipeline(
    recipe: Recipe,
    run_dir: RunDir,
    only: list[str] | None = None,
    force: list[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    console: Console | None = None,
) -> dict[str, StageRecord]:
    """Run every enabled stage (or those in `only`, which must have finished inputs).

    A stage whose cache key matches a finished record is skipped. A stage whose key changed has its
    folder cleared and runs again; every stage after it then has a new key too.
    """
    console = console or Console()
    options = options or {}
    force = force or []
    distributed.init()
    main = distributed.is_main()
    stages = [s for s in all_stages() if s.enabled(recipe)]
    if only:
        unknown = set(only) - {s.name for s in all_stages()}
        if unknown:
            raise StageError(f"unknown stage(s): {', '.join(sorted(unknown))}")
    if main:
        run_dir.root.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run_dir.root / RESOLVED_RECIPE, recipe.resolved_yaml())
        run_dir.set_meta(recipe_name=recipe.name, recipe_hash=recipe.section_hash(*Recipe.model_fields))
    env = environment()
    records = run_dir.records()
    store = run_dir.store  # a sweep point's stage store, else None
    keys: dict[str, str] = {}
    results: dict[str, StageRecord] = {}
    past_distributed = False
    for stage in stages:
        if past_distributed and not main:
            break  # the other ranks' part ends with pretraining
        # Under torchrun every rank walks the stages up to training (pretrain or translation) in step; after it,
        # rank 0 goes on alone.
        in_step = distributed.is_distributed() and not past_distributed
        past_distributed = past_distributed or stage.name in _DISTRIBUTED_STAGES
        input_keys = {}
        for dep in stage.inputs:
            if dep not in keys:
                raise StageError(f"stage `{stage.name}` needs `{dep}`, which is not enabled in the recipe")
            input_keys[dep] = keys[dep]
        opts = options.get(stage.name)
        key = stage.cache_key(recipe, input_keys, opts)
        keys[stage.name] = key
        prev = records.get(stage.name)
        announced = False
        if store is not None and stage.name not in force:
            # A finished store entry with this key is this point's stage: link it (a cache hit when
            # another point, or an earlier plan, built it).
            if main and store.done(stage.name, key) is not None:
                prev, announced = _adopt(stage.name, key, prev, run_dir, store, console,
                                         only is None or stage.name in only)
            if in_step:
                distributed.barrier()
                prev = run_dir.record(stage.name)
        if only and stage.name not in only:
            if prev is None or prev.status != "done" or prev.cache_key != key:
                # Not asked to run it, but a later stage needs it current.
                needed = any(stage.name in s.inputs for s in stages if s.name in only)
                if needed:
                    raise StageError(
                        f"stage `{stage.name}` is not finished for this recipe (status: "
                        f"{prev.status if prev else 'never run'}); run `tlc run` or `tlc {stage.name}` first"
                    )
            continue
        if prev is not None and prev.status == "done" and prev.cache_key == key and stage.name not in force:
            if not announced:
                console.print(f"[dim]✓ {stage.name}: up to date (key {key[:8]}), skipped[/dim]")
            results[stage.name] = prev
            continue
        if not main and stage.name not in _DISTRIBUTED_STAGES:
            distributed.barrier()  # rank 0 does it; wait for its files
            continue
        results[stage.name] = _run_one(stage, recipe, run_dir, key, prev, results, opts, env, console, main, in_step,
                                       store, stage.name in force)
        if main and store is None:
            _mark_dependents_stale(stage, stages, run_dir, console)
        if in_step:
            distributed.barrier()
    return results


STALE = "stale"


def _mark_dependents_stale(stage: Stage, stages: list[Stage], run_dir: RunDir, console: Console) -> None:
    """A stage that ran again under the same key (`--force`, `tlc export --formats`) may have new outputs
    that the finished stages after it never saw: their keys cannot tell, so their records say so."""
    after = {stage.name}
    for s in stages:
        if after & set(s.inputs):
            after.add(s.name)
    records = run_dir.records()
    stale = [s.name for s in stages if s.name in after and s.name != stage.name
             and (rec := records.get(s.name)) is not None and rec.status in ("done", STALE)]
    if not stale:
        return
    how = " then ".join(f"`tlc {n} {run_dir.root}`" for n in stale)
    for name in stale:
        rec = records[name]
        rec.status = STALE
        rec.error = f"{stage.name} ran again after it; run {how}"
        run_dir.save_record(rec)
    console.print(f"[yellow]{', '.join(stale)}: stale ({stage.name} ran again after them); run {how}[/yellow]")


def _shared(run_dir: RunDir, store: StageStore, stage: str, key: str, hit: bool, built_by: str | None) -> dict[str, Any]:
    import os

    return {"entry": os.path.relpath(store.entry(stage, key), run_dir.root), "hit": hit, "built_by": built_by}


def _adopt(stage: str, key: str, prev: StageRecord | None, run_dir: RunDir, store: StageStore, console: Console,
           announce: bool) -> tuple[StageRecord, bool]:
    """Link a finished store entry as this run's stage and record it (a cache hit unless this point built
    it); returns the record and whether a line was printed."""
    store.link(run_dir.stage_dir(stage), stage, key)
    if prev is not None and prev.status == "done" and prev.cache_key == key and prev.shared is not None:
        return prev, False  # already linked and recorded on an earlier run of this point
    entry = store.done(stage, key) or {}
    built_by = entry.get("built_by")
    rec = StageRecord(name=stage, status="done", cache_key=key, started_at=entry.get("started_at"),
                      finished_at=entry.get("finished_at"), outputs=entry.get("outputs") or {},
                      environment=entry.get("environment"),
                      shared=_shared(run_dir, store, stage, key, hit=built_by != run_dir.root.name, built_by=built_by))
    run_dir.save_record(rec)
    if announce:
        who = f"built by {built_by}" if built_by and built_by != run_dir.root.name else "built earlier"
        console.print(f"[dim]✓ {stage}: cache hit in the sweep's stage store (key {key[:8]}, {who}), reused[/dim]")
    return rec, announce


def _run_one(
    stage: Stage,
    recipe: Recipe,
    run_dir: RunDir,
    key: str,
    prev: StageRecord | None,
    done: dict[str, StageRecord],
    opts: dict[str, Any] | None,
    env: dict[str, Any],
    console: Console,
    main: bool,
    in_step: bool,
    store: StageStore | None = None,
    forced: bool = False,
) -> StageRecord:
    if store is None or not main:
        return _execute(stage, recipe, run_dir, key, prev, done, opts, env, console, main, in_step, store)

    def finished() -> bool:
        return not forced and store.done(stage.name, key) is not None

    with store.lock(stage.name, key, on_wait=lambda m: console.print(f"[yellow]… {m}[/yellow]"), is_done=finished) as mine:
        if not mine or finished():
            return _adopt(stage.name, key, prev, run_dir, store, console, True)[0]  # another process built it meanwhile
        store.link(run_dir.stage_dir(stage.name), stage.name, key)
        before = store.record(stage.name, key)
        if before is not None and before.get("status") in ("running", "failed") and not forced:
            console.print(f"[cyan]↺ {stage.name}: resuming interrupted work in the stage store[/cyan]")
        store.save_record(stage.name, key, {"status": "running", "cache_key": key, "built_by": run_dir.root.name,
                                            "started_at": time.time()})
        try:
            rec = _execute(stage, recipe, run_dir, key, None, done, opts, env, console, main, in_step, store)
        except BaseException as exc:
            store.save_record(stage.name, key, {"status": "failed", "cache_key": key, "built_by": run_dir.root.name,
                                                "error": f"{type(exc).__name__}: {exc}"[:2000]})
            raise
        store.save_record(stage.name, key, {"status": "done", "cache_key": key, "built_by": run_dir.root.name,
                                            "started_at": rec.started_at, "finished_at": rec.finished_at,
                                            "outputs": rec.outputs, "environment": rec.environment})
        rec.shared = _shared(run_dir, store, stage.name, key, hit=False, built_by=run_dir.root.name)
        run_dir.save_record(rec)
        return rec


def _execute(
    stage: Stage,
    recipe: Recipe,
    run_dir: RunDir,
    key: str,
    prev: StageRecord | None,
    done: dict[str, StageRecord],
    opts: dict[str, Any] | None,
    env: dict[str, Any],
    console: Console,
    main: bool,
    in_step: bool,
    store: StageStore | None,
) -> StageRecord:
    out_dir = run_dir.stage_dir(stage.name)
    if store is not None:
        pass  # a changed key is another store entry (linked by the caller); the old one may serve other points
    elif main and prev is not None and prev.cache_key not in (None, key):
        console.print(f"[yellow]↻ {stage.name}: configuration or inputs changed, starting it afresh[/yellow]")
        run_dir.reset_stage(stage.name)
    elif main and prev is not None and prev.status == STALE:
        console.print(f"[yellow]↻ {stage.name}: its inputs changed since it ran, starting it afresh[/yellow]")
        run_dir.reset_stage(stage.name)
    elif prev is not None and prev.status in ("running", "failed") and prev.cache_key == key:
        console.print(f"[cyan]↺ {stage.name}: resuming interrupted work[/cyan]")
    if in_step and stage.name in _DISTRIBUTED_STAGES:
        distributed.barrier()  # nobody starts before rank 0 has cleared a stale folder (or linked the store entry)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = StageRecord(name=stage.name, status="running", cache_key=key, started_at=time.time(), environment=env)
    if main:
        run_dir.save_record(rec)
        atomic.write_text(out_dir / RESOLVED_RECIPE, recipe.resolved_yaml())
    console.rule(f"[bold]{stage.name}")
    ctx = StageContext(
        recipe=recipe,
        run_dir=run_dir,
        out_dir=out_dir,
        inputs={d: done[d] for d in stage.inputs if d in done} | {
            d: r for d, r in run_dir.records().items() if d in stage.inputs and d not in done
        },
        console=console,
        options=opts or {},
    )
    try:
        outputs = stage.run(ctx)
    except (KeyboardInterrupt, Exception) as exc:
        rec.status = "failed"
        rec.finished_at = time.time()
        rec.error = f"{type(exc).__name__}: {exc}"
        if main:
            run_dir.save_record(rec)
        if isinstance(exc, (TlcError, KeyboardInterrupt)):
            raise
        raise StageError(f"stage `{stage.name}` failed: {rec.error}\n{traceback.format_exc()}") from exc
    rec.status = "done"
    rec.finished_at = time.time()
    rec.outputs = outputs or {}
    if main:
        run_dir.save_record(rec)
    console.print(f"[green]✓ {stage.name}[/green] done in {rec.seconds:.1f}s")
    return rec
