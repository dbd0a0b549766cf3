"""Runs stages in order through the run directory, skipping those whose cache key is unchanged."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console

from tlc_export import atomic, distributed, integrity
from tlc_export.errors import StageError, TlcError
from tlc_export.recipe import Recipe
from tlc_export.rundir import RESOLVED_RECIPE, RunDir, StageRecord, environment, stale_inputs
from tlc_export.stages.base import Stage, StageContext
from tlc_export.store import StageStore
from tlc_export.tasks import family_of, stage_names
from tlc_export.tasks.base import TaskFamily
from tlc_export.writer_lock import writer_lock


def default_run_dir(recipe: Recipe, recipe_path: str | Path) -> Path:
    return Path("runs") / Path(recipe_path).stem


def cache_keys(recipe: Recipe, options: dict[str, dict[str, Any]] | None = None,
               run_dir: RunDir | None = None) -> dict[str, str]:
    """`{stage: cache_key}` of every enabled stage, computed as `run_pipeline` does (in `run_dir`, whose
    `Stage.keyed_facts` count), without running any."""
    options = options or {}
    keys: dict[str, str] = {}
    for stage in stages_of(family_of(recipe), recipe):
        input_keys = {dep: keys[dep] for dep in stage.inputs if dep in keys}
        facts = stage.keyed_facts(run_dir) if run_dir is not None else None
        keys[stage.name] = stage.cache_key(recipe, input_keys, options.get(stage.name), facts)
    return keys


def stages_of(family: TaskFamily, recipe: Recipe) -> list[Stage]:
    """The recipe's stages in run order: its family's, those whose section the recipe has."""
    return [s for s in family.stages() if s.enabled(recipe)]


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
    folder cleared and runs again; every stage after it then has a new key too. A forced stage (`force`) runs
    from scratch: its old folder is moved aside and deleted once the new run is done. A finished stage whose
    inputs were re-run since it read them is stale and runs again from scratch.

    The run directory's writer lock (`writer_lock`) is held throughout; before a stage runs, the recorded
    files of every stage it depends on are verified (`integrity.verify_stages`).
    """
    distributed.init()
    with writer_lock(run_dir.root, "this run"):
        return _pipeline(recipe, run_dir, only, force or [], options or {}, console or Console())


def _pipeline(recipe: Recipe, run_dir: RunDir, only: list[str] | None, force: list[str],
              options: dict[str, dict[str, Any]], console: Console) -> dict[str, StageRecord]:
    main = distributed.is_main()
    family = family_of(recipe)  # asked once: the stages get it from their context
    stages = stages_of(family, recipe)
    if only:
        unknown = set(only) - set(stage_names())
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
    ancestors: dict[str, list[str]] = {}
    stale: set[str] = set()
    past_distributed = False
    for stage in stages:
        ancestors[stage.name] = list(dict.fromkeys(a for d in stage.inputs for a in (*ancestors.get(d, []), d)))
        if past_distributed and not main:
            break  # the other ranks' part ends with pretraining
        # Under torchrun every rank walks the stages up to training (pretrain or translation) in step; after it,
        # rank 0 goes on alone.
        in_step = distributed.is_distributed() and not past_distributed
        past_distributed = past_distributed or stage.distributed
        input_keys = {}
        for dep in stage.inputs:
            if dep not in keys:
                raise StageError(f"stage `{stage.name}` needs `{dep}`, which is not enabled in the recipe")
            input_keys[dep] = keys[dep]
        opts = options.get(stage.name)
        key = stage.cache_key(recipe, input_keys, opts, stage.keyed_facts(run_dir))
        keys[stage.name] = key
        prev = records.get(stage.name)
        forced = stage.name in force
        announced = False
        if store is not None and not forced:
            # A finished store entry with this key is this point's stage: link it (a cache hit when
            # another point, or an earlier plan, built it).
            if main and store.done(stage.name, key) is not None:
                prev, announced = _adopt(stage.name, key, prev, run_dir, store, console,
                                         only is None or stage.name in only)
            if in_step:
                distributed.barrier()
                prev = run_dir.record(stage.name)
        if prev is not None and prev.status == "done" and prev.cache_key == key and not forced:
            changed = stale_inputs(prev, {**records, **results}, stale)
            if changed and only and stage.name not in only:
                stale.add(stage.name)  # not run now: a later stage that needs it refuses below
            elif changed:
                console.print(f"[yellow]↻ {stage.name}: {', '.join(changed)} re-ran after it (or is stale), so "
                              "its outputs are stale; re-running it from scratch[/yellow]")
                forced = True
        if only and stage.name not in only:
            if stage.name in stale and any(stage.name in s.inputs for s in stages if s.name in only):
                raise StageError(
                    f"stage `{stage.name}` is stale: an input it read was re-run since; run `tlc run` (it re-runs "
                    f"stale stages) or `tlc {stage.name} RUN_DIR` first"
                )
            if prev is None or prev.status != "done" or prev.cache_key != key:
                # Not asked to run it, but a later stage needs it current.
                needed = any(stage.name in s.inputs for s in stages if s.name in only)
                if needed:
                    raise StageError(
                        f"stage `{stage.name}` is not finished for this recipe (status: "
                        f"{prev.status if prev else 'never run'}); run `tlc run` or `tlc {stage.name}` first"
                    )
            continue
        # Options the stage keeps out of its key (`tlc export --formats`) ask for work inside its folder: it runs in
        # place even when up to date (not forced: the rest of its folder stays); its new files make later stages stale.
        in_place = bool(opts) and bool(set(opts) & stage.unkeyed_options) and (not only or stage.name in only)
        if prev is not None and prev.status == "done" and prev.cache_key == key and not forced and not in_place:
            if not announced:
                console.print(f"[dim]✓ {stage.name}: up to date (key {key[:8]}), skipped[/dim]")
            results[stage.name] = prev
            continue
        if not main and not stage.distributed:
            distributed.barrier()  # rank 0 does it; wait for its files
            continue
        check = None
        if main:
            # What this stage will read is checked before anything of it is written.
            current = {**records, **results}
            check = integrity.verify_stages(
                run_dir.root, [(a, run_dir.stage_dir(a)) for a in ancestors[stage.name]
                               if a in current and current[a].status == "done"], reader=f"the `{stage.name}` stage")
        inputs_now = {**records, **results}
        input_digests = {d: (inputs_now[d].files or {}).get("digest") for d in stage.inputs if d in inputs_now}
        results[stage.name] = _run_one(stage, recipe, run_dir, key, prev, results, opts, env, console, main, in_step,
                                       store, forced, check, {d: v for d, v in input_digests.items() if v}, family)
        if in_step:
            distributed.barrier()
    return results


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
                      environment=entry.get("environment"), files=entry.get("files"),
                      input_digests=entry.get("input_digests"),
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
    check: integrity.BackgroundCheck | None = None,
    input_digests: dict[str, str] | None = None,
    family: TaskFamily | None = None,
) -> StageRecord:
    if store is None or not main:
        return _execute(stage, recipe, run_dir, key, prev, done, opts, env, console, main, in_step, store, forced,
                        check, input_digests, family)

    def finished() -> bool:
        return not forced and store.done(stage.name, key) is not None

    with store.lock(stage.name, key, on_wait=lambda m: console.print(f"[yellow]… {m}[/yellow]"), is_done=finished) as mine:
        if not mine or finished():
            if check is not None:
                check.cancel()
            return _adopt(stage.name, key, prev, run_dir, store, console, True)[0]  # another process built it meanwhile
        store.link(run_dir.stage_dir(stage.name), stage.name, key)
        before = store.record(stage.name, key)
        if before is not None and before.get("status") in ("running", "failed") and not forced:
            console.print(f"[cyan]↺ {stage.name}: resuming interrupted work in the stage store[/cyan]")
        store.save_record(stage.name, key, {"status": "running", "cache_key": key, "built_by": run_dir.root.name,
                                            "started_at": time.time()})
        try:
            rec = _execute(stage, recipe, run_dir, key, None, done, opts, env, console, main, in_step, store, forced,
                           check, input_digests, family)
        except BaseException as exc:
            store.save_record(stage.name, key, {"status": "failed", "cache_key": key, "built_by": run_dir.root.name,
                                                "error": f"{type(exc).__name__}: {exc}"[:2000]})
            raise
        store.save_record(stage.name, key, {"status": "done", "cache_key": key, "built_by": run_dir.root.name,
                                            "started_at": rec.started_at, "finished_at": rec.finished_at,
                                            "outputs": rec.outputs, "environment": rec.environment,
                                            "files": rec.files, "input_digests": rec.input_digests})
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
    forced: bool = False,
    check: integrity.BackgroundCheck | None = None,
    input_digests: dict[str, str] | None = None,
    family: TaskFamily | None = None,
) -> StageRecord:
    out_dir = run_dir.stage_dir(stage.name)
    if forced and main:
        _move_aside(out_dir, stage.name, console)
    elif store is not None:
        pass  # a changed key is another store entry (linked by the caller); the old one may serve other points
    elif main and prev is not None and prev.cache_key not in (None, key):
        console.print(f"[yellow]↻ {stage.name}: configuration or inputs changed, starting it afresh[/yellow]")
        run_dir.reset_stage(stage.name)
    elif prev is not None and prev.status in ("running", "failed") and prev.cache_key == key:
        console.print(f"[cyan]↺ {stage.name}: resuming interrupted work[/cyan]")
    if in_step and stage.distributed:
        distributed.barrier()  # nobody starts before rank 0 has cleared a stale folder (or linked the store entry)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = StageRecord(name=stage.name, status="running", cache_key=key, started_at=time.time(), environment=env,
                      input_digests=input_digests)
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
        family=family,
    )
    try:
        try:
            if check is not None:
                check.watch()
            outputs = stage.run(ctx)
        except KeyboardInterrupt:
            if check is None or check.fault is None:
                raise
            # else: the background check interrupted the stage; finish() raises its error
        if check is not None:
            check.finish()
        if main:
            rec.files = integrity.record_stage(out_dir, stage.name)
    except (KeyboardInterrupt, Exception) as exc:
        if check is not None:
            check.cancel()
            if check.fault is not None and not isinstance(exc, integrity.IntegrityError):
                exc = check.error()
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
        _drop_aside(out_dir, stage.name, console)
    console.print(f"[green]✓ {stage.name}[/green] done in {rec.seconds:.1f}s")
    return rec


_ASIDE = ".replaced-"


def _real(out_dir: Path) -> Path:
    """The stage's folder itself: a sweep point's is a link into the stage store."""
    return out_dir.resolve() if out_dir.is_symlink() else out_dir


def _move_aside(out_dir: Path, stage: str, console: Console) -> None:
    """--force: the old outputs leave the stage's folder (kept beside it until the new run is done)."""
    real = _real(out_dir)
    if not real.exists() or not any(real.iterdir()):
        return
    aside = real.with_name(f".{real.name}{_ASIDE}{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**6:06d}")
    real.rename(aside)
    real.mkdir(parents=True)
    console.print(f"[yellow]↻ {stage}: forced, running it from scratch; the old outputs wait in {aside} until the "
                  "new ones are done[/yellow]")


def _drop_aside(out_dir: Path, stage: str, console: Console) -> None:
    """The stage finished: the outputs a --force moved aside (by this run or an interrupted one) go."""
    import shutil

    real = _real(out_dir)
    for old in sorted(real.parent.glob(f".{real.name}{_ASIDE}*")):
        shutil.rmtree(old, ignore_errors=True)
        console.print(f"[dim]{stage}: removed the replaced outputs {old}[/dim]")
