"""`tlc` command line: run a recipe, validate it, inspect a run directory, or run one stage."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tlc_export import __version__, distributed
from tlc_export.console import CliConsole
from tlc_export.errors import RecipeError, TlcError
from tlc_export.recipe import Recipe, schema_lines
from tlc_export.rundir import RunDir, stale_inputs
from tlc_export.sweep.plan import load_plan
from tlc_export.writer_lock import writer_lock

console = CliConsole()  # rich tables on a terminal, full tab-separated rows in a pipe
err_console = Console(stderr=True)



class StageName(click.Choice):
    """A stage name of any registered task family, in pipeline order (asked of the registry when an option
    is parsed or its help printed, not when the CLI loads: a new family's stages need no edit here)."""

    def __init__(self) -> None:
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        from tlc_export.tasks import stage_names

        return tuple(stage_names())

    @choices.setter
    def choices(self, _value: Any) -> None:
        pass


def stage_order() -> list[str]:
    return list(StageName().choices)


def _fail(exc: Exception) -> None:
    code = 2 if isinstance(exc, RecipeError) else 1
    # soft_wrap: paths and commands in the message stay whole (the terminal wraps them for display)
    err_console.print(f"[bold red]error:[/bold red] {exc}", markup=True, highlight=False, soft_wrap=True)
    sys.exit(code)


def _run(recipe: Recipe, run_dir: RunDir, only: list[str] | None = None, force: tuple[str, ...] = (),
         options: dict[str, dict[str, Any]] | None = None) -> None:
    from tlc_export.runner import run_pipeline

    run_pipeline(recipe, run_dir, only=only, force=list(force), options=options, console=console)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tlc")
def main() -> None:
    """tlc — Train Large, Then Compress.

    Pretrain a grid of model sizes for the same wall-clock budget, finetune, prune, quantize,
    export and benchmark every variant, and report which one to deploy.
    """


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where results go (default: runs/<recipe name>). A sweep's parent run directory.")
@click.option("--force", multiple=True, type=StageName(),
              help="Re-run this stage even if it is up to date (repeatable).")
@click.option("--until", type=StageName(), default=None, help="Stop after this stage.")
@click.option("--point", type=click.IntRange(min=0), default=None,
              help="A sweep recipe: run only this point (`tlc sweep list RECIPE` prints every point's command).")
def run(recipe: Path, run_dir: Path | None, force: tuple[str, ...], until: str | None, point: int | None) -> None:
    """Run every stage of RECIPE; finished stages are skipped, interrupted ones resume.

    A recipe with a `sweep:` section runs every point (or --point K) as a sub-run of one parent run
    directory; points share every stage whose cache key they have in common.
    """
    from tlc_export.sweep.plan import Sweep

    try:
        plan = load_plan(recipe)
        order = stage_order()
        only = order[: order.index(until) + 1] if until else None
        rd = RunDir(run_dir or Path("runs") / recipe.stem)
        if isinstance(plan, Sweep):
            _run_sweep(plan, recipe, rd.root, point, only, force)
            return
        if point is not None:
            raise TlcError(f"{recipe}: --point {point} is for sweep recipes; this one has no `sweep:` section")
        r = plan
        with writer_lock(rd.root, "`tlc run`"):
            if distributed.is_main():
                rd.set_meta(recipe_path=str(recipe.resolve()), recipe_base_dir=str(recipe.resolve().parent))
            _run(r, rd, only=only, force=force)
        if not distributed.is_main():
            return
        report = rd.root / "report" / "index.html"
        console.print(f"[bold green]done[/bold green] — run directory: {rd.root}")
        _print_card(rd.root)
        if report.exists():
            console.print(f"report: [link=file://{report.resolve()}]{report}[/link]")
    except TlcError as exc:
        _fail(exc)


def _run_sweep(sweep: Any, recipe: Path, parent: Path, point: int | None, only: list[str] | None,
               force: tuple[str, ...]) -> None:
    from tlc_export.sweep.run import run_sweep

    # Every point: this process writes the parent (its report) too. One point: other points' jobs share the parent.
    with writer_lock(parent, "`tlc run`") if point is None else contextlib.nullcontext():
        outcomes = run_sweep(sweep, parent, recipe_path=recipe, points=[point] if point is not None else None,
                             only=only, force=list(force), console=console)
    if not distributed.is_main():
        return
    table = Table(title=f"sweep {sweep.name}: {len(outcomes)} of {len(sweep.points)} point(s) run")
    for col in ("point", "values", "status"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        colour = "green" if o.status == "done" else "red"
        table.add_row(o.point.id, o.point.label(), f"[{colour}]{o.status}[/{colour}]")
    console.print(table)
    report = parent / "report" / "index.html"
    if report.exists():
        console.print(f"sweep report: [link=file://{report.resolve()}]{report}[/link]")
    _print_card(parent)
    failed = [o for o in outcomes if o.status != "done"]
    if failed:
        raise TlcError(f"{len(failed)} sweep point(s) failed: {', '.join(o.point.id for o in failed)}; "
                       "fix the cause and run again (finished stages are reused)")


@main.group()
def sweep() -> None:
    """Sweep recipes: one sub-run per point of a grid of field values."""


@sweep.command("list")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The parent run directory every point's command uses (default: runs/<recipe name>).")
def sweep_list(recipe: Path, run_dir: Path | None) -> None:
    """Print one `tlc run RECIPE --point K` command per point of RECIPE's sweep.

    Launch them as separate jobs (a scheduler, or `torchrun … -m tlc_export run … --point K`)
    on storage they share: each point links the stages it has in common with others instead of
    recomputing them, and `tlc report RUN_DIR` merges whatever points have finished.
    """
    from tlc_export.sweep.plan import Sweep
    from tlc_export.sweep.run import sweep_commands

    try:
        plan = load_plan(recipe)
        if not isinstance(plan, Sweep):
            raise TlcError(f"{recipe}: no `sweep:` section; run it with `tlc run {recipe}`")
        for line in sweep_commands(plan, recipe, run_dir or Path("runs") / recipe.stem):
            click.echo(line)
    except TlcError as exc:
        _fail(exc)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--explain", is_flag=True, help="Also print every field with its documentation.")
def validate(recipe: Path, explain: bool) -> None:
    """Check RECIPE and list every problem with its YAML line; writes nothing.

    A sweep recipe is checked point by point; a problem a swept value causes points at that value.
    """
    from tlc_export.sweep.plan import Sweep

    try:
        plan = load_plan(recipe)
    except RecipeError as exc:
        _fail(exc)
        return
    if isinstance(plan, Sweep):
        console.print(f"[green]✓ {recipe}[/green] is valid: a sweep ({plan.mode}) of {len(plan.points)} points")
        for p in plan.points:
            console.print(f"  {p.id}: {_summary(p.recipe)}", highlight=False)
        first = plan.points[0].recipe if plan.points else None
    else:
        console.print(f"[green]✓ {recipe}[/green] is valid: {_summary(plan)}")
        first = plan
    note = _stops_early(first) if first is not None else None
    if note:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if explain:
        _print_schema()


def _stage_roles(recipe: Recipe) -> dict[str, str]:
    """Each step of the recipe's family, in run order: "run", or "not in recipe" (its section is absent).
    Steps of the other family are absent (n/a for this run)."""
    from tlc_export.tasks import family_of

    return {s.name: "run" if s.enabled(recipe) else "not in recipe" for s in family_of(recipe).stages()}


def _stops_early(recipe: Recipe) -> str | None:
    """Say so when `tlc run` will stop before the report because a section is absent."""
    roles = _stage_roles(recipe)
    order = list(roles)  # the family's pipeline order
    missing = [n for n in order if roles[n] != "run"]
    if not missing:
        return None
    ran = [n for n in order if roles[n] == "run"]
    last = ran[-1] if ran else "nothing"
    return (f"no `{'`, `'.join(f'{n}:' for n in missing)}` section(s): `tlc run` stops after {last} and writes no "
            "report; add them to get the report (`tlc recipe-schema` lists their fields; `{}` takes every default)")


def _summary(r: Recipe) -> str:
    if r.translation is not None:
        t = r.translation
        return (f"translation {t.source_lang}→{t.target_lang} ({t.data.kind}); sizes "
                f"{', '.join(s.name for s in t.grid())}; budget {t.train.time_budget_s:g}s each")
    assert r.models is not None and r.pretrain is not None  # validation requires them without `translation`
    sizes = ", ".join(s.name for s in r.models.grid())
    stages = [s for s in ["finetune", "compress", "export", "bench", "report"] if getattr(r, s) is not None]
    return (f"sizes {sizes}; budget {r.pretrain.time_budget_s:g}s each; "
            f"stages data, pretrain{', ' + ', '.join(stages) if stages else ''}")


def _print_schema() -> None:
    table = Table(title="recipe fields", show_lines=False)
    for col in ("field", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for path, typ, default, desc in schema_lines():
        table.add_row(path, typ, default, desc)
    console.print(table)


@main.command("recipe-schema")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON schema instead of a table.")
def recipe_schema(as_json: bool) -> None:
    """Print every recipe field with its type, default and documentation."""
    if as_json:
        import json

        click.echo(json.dumps(Recipe.model_json_schema(), indent=2))
    else:
        _print_schema()


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def status(run_dir: Path) -> None:
    """Show a run directory's manifest as a table (a sweep: every point's stages)."""
    from tlc_export.sweep.run import is_sweep_dir

    if is_sweep_dir(run_dir):
        _sweep_status(run_dir)
        return
    rd = RunDir(run_dir)
    if not rd.exists():
        _fail(TlcError(f"{run_dir}: no manifest.json here; is it a run directory?"))
    m = rd.load_manifest()
    table = Table(title=f"{run_dir} — {m.get('recipe_name', '')}")
    for col in ("stage", "status", "cache key", "seconds", "outputs / error"):
        table.add_column(col, overflow="fold")
    records = rd.records()
    try:
        roles: dict[str, str] | None = _stage_roles(rd.recipe())
    except TlcError:
        roles = None  # no readable recipe: say only what the manifest says
    stale: set[str] = set()
    for name in stage_order():
        rec = records.get(name)
        if rec is None:
            role = "not run" if roles is None else roles.get(name, "n/a")
            table.add_row(name, f"[dim]{'not run' if role == 'run' else role}[/dim]", "", "", "")
            continue
        colour = {"done": "green", "running": "yellow", "failed": "red"}.get(rec.status, "white")
        status = f"[{colour}]{rec.status}[/{colour}]"
        detail = rec.error or ", ".join(f"{k}" for k in list(rec.outputs)[:6])
        changed = stale_inputs(rec, records, stale) if rec.status == "done" else []
        if changed:
            stale.add(name)
            status = "[yellow]stale[/yellow]"
            detail = (f"{', '.join(changed)} re-ran (or is stale) after it ran; `tlc run` (or `tlc {name} {run_dir}`) "
                      "re-runs it")
        secs = f"{rec.seconds:.1f}" if rec.seconds is not None else ""
        table.add_row(name, status, (rec.cache_key or "")[:10], secs, detail)
    console.print(table)
    aside = sorted(p.name for p in rd.root.glob(".*.replaced-*"))
    if aside:
        console.print(f"[yellow]outputs replaced by --force, kept until the forced stage finishes:[/yellow] "
                      f"{', '.join(aside)}")


def _sweep_status(parent: Path) -> None:
    from tlc_export.report.sweep import point_statuses

    table = Table(title=f"{parent} — sweep")
    for col in ("point", "values", "stages (shared = a cache hit from another point)"):
        table.add_column(col, overflow="fold")
    colours = {"done": "green", "running": "yellow", "failed": "red"}
    for row in point_statuses(parent):
        cells = []
        for name in stage_order():
            st = row["stages"].get(name)
            if st is not None:
                mark = " (shared)" if st.get("hit") else ""
                cells.append(f"{name} [{colours.get(st['status'], 'white')}]{st['status']}[/]{mark}")
        table.add_row(row["id"], row["label"], ", ".join(cells) or "[dim]not started[/dim]")
    console.print(table)


@main.command("verify")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def verify_cmd(run_dir: Path) -> None:
    """Check every file of RUN_DIR against the checksums its stages recorded (a sweep: its stage store too).

    Prints ok / missing / corrupt / unrecorded per stage, and exits 1 on any fault, naming the earliest
    stage to re-run and its command.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from tlc_export import integrity
    from tlc_export.sweep.run import is_sweep_dir
    from tlc_export.verify import earliest_fault, folders_of, recorded_bytes, verify_run
    from tlc_export.writer_lock import holder, is_locked

    if not RunDir(run_dir).exists() and not is_sweep_dir(run_dir):
        if (run_dir / "tlc.json").is_file():
            _verify_bundle(run_dir)
            return
        _fail(TlcError(f"{run_dir}: no manifest.json here; is it a run directory (or a bundle)?"))
    if is_locked(run_dir):
        h = holder(run_dir) or {}
        console.print(f"[yellow]note:[/yellow] PID {h.get('pid', '?')} (`{h.get('command', '?')}`) is writing here; "
                      "its running stage is not checked", highlight=False)
    folders = folders_of(run_dir)
    with Progress(TextColumn("verifying"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("verify", total=recorded_bytes(folders))
        verify_run(run_dir, on_bytes=lambda n: progress.advance(task, n), folders=folders)
    table = Table(title=f"{run_dir} — files against their stages' checksums")
    for col in ("stage", "status", "ok", "missing", "corrupt", "unrecorded", "MB ok"):
        table.add_column(col, overflow="fold")
    for fc in folders:
        if fc.status not in ("done", "stale"):
            table.add_row(fc.label, f"[yellow]{fc.status}[/yellow] (not checked)", "", "", "", "", "")
            continue
        cells = [str(fc.ok), *(f"[red]{n}[/red]" if n else "0" for n in
                               (fc.count("missing"), fc.count("corrupt"), fc.count("unrecorded")))]
        status = "[green]ok[/green]" if not fc.faults else "[red]FAULT[/red]"
        if fc.status == "stale":
            status += " [yellow](stale)[/yellow]"
        table.add_row(fc.label, status, *cells, f"{fc.bytes / 1e6:.1f}")
    console.print(table)
    first = earliest_fault(folders)
    if first is None:
        n = sum(fc.ok for fc in folders)
        console.print(f"[green]✓ every recorded file matches[/green] ({n} files)")
        return
    for fc in folders:
        for kind, path, detail in fc.faults:
            console.print(f"  [red]{kind}[/red] {path}: {detail}", highlight=False, soft_wrap=True)
    cmd = integrity.rebuild_command(first.run_root, first.stage)
    nfaults = sum(len(fc.faults) for fc in folders)
    err_console.print(f"[bold red]error:[/bold red] {nfaults} fault(s); the earliest stage to re-run is "
                      f"`{first.stage}`: `{cmd}`", highlight=False, soft_wrap=True)
    sys.exit(1)


def _verify_bundle(root: Path) -> None:
    """A bundle from `tlc package`: its files against the checksums its tlc.json records (what `tlc predict` checks)."""
    from tlc_export.tasks import family_of_bundle

    try:
        family_of_bundle(root).open_bundle(root)
    except TlcError as exc:
        _fail(exc)
    console.print(f"[green]✓ {root}[/green]: the bundle's files match the checksums in its tlc.json")


@main.group()
def data() -> None:
    """Fetch and tokenize a recipe's data: built-in sets (cached under $TLC_HOME) and your own files."""


@data.command("prepare")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory to write the token files into (default: runs/<recipe name>).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Tokenizer processes (overrides data.workers; the files are identical for any value).")
@click.option("--fetch-only", is_flag=True, help="Only fetch and check the sources; do not tokenize.")
def data_prepare(recipe: Path, run_dir: Path | None, workers: int | None, fetch_only: bool) -> None:
    """Fetch every data source RECIPE needs, then run the data stage into the run directory.

    Run it once on one node; then every node and rank of `tlc run --run-dir` on shared storage
    finds the data stage up to date and memory-maps the same token files.
    """
    try:
        from tlc_export.runner import stages_of
        from tlc_export.sweep.plan import Sweep
        from tlc_export.tasks import family_of

        plan = load_plan(recipe)
        if isinstance(plan, Sweep):
            _prepare_sweep(plan, recipe, run_dir, workers, fetch_only)
            return
        r = plan
        family = family_of(r)
        info = family.prepare_data(r)
        for name, desc in info.items():
            console.print(f"[green]✓[/green] {name}: {desc}")
        if fetch_only:
            return
        if "data" not in [s.name for s in stages_of(family, r)]:
            console.print("nothing to tokenize ahead: this recipe's stage trains its own tokenizer")
            return
        if workers is not None:
            r.data.workers = workers
        rd = RunDir(run_dir or Path("runs") / recipe.stem)
        with writer_lock(rd.root, "`tlc data prepare`"):
            rd.set_meta(recipe_path=str(recipe.resolve()), recipe_base_dir=str(recipe.resolve().parent))
            _run(r, rd, only=["data"])
        console.print(f"[bold green]data ready[/bold green] — {rd.root / 'data' / 'tokens'}")
    except TlcError as exc:
        _fail(exc)


def _prepare_sweep(sweep: Any, recipe: Path, run_dir: Path | None, workers: int | None, fetch_only: bool) -> None:
    """Every point's data stage; points with the same data key share one entry of the stage store."""
    from tlc_export.sweep.run import open_parent, open_point
    from tlc_export.tasks import family_of

    first = sweep.points[0].recipe
    for name, desc in family_of(first).prepare_data(first).items():
        console.print(f"[green]✓[/green] {name}: {desc}")
    if fetch_only:
        return
    parent = run_dir or Path("runs") / recipe.stem
    open_parent(sweep, parent, recipe)
    for p in sweep.points:
        if workers is not None:
            p.recipe.data.workers = workers
        _run(p.recipe, open_point(sweep, parent, p, recipe), only=["data"])
    console.print(f"[bold green]data ready[/bold green] for {len(sweep.points)} point(s) — {parent / 'stages' / 'data'}")


def _stage_command(stage: str, doc: str, extra_options: list[click.Option] | None = None) -> None:
    def cmd(run_dir: Path, force: bool, **kw: Any) -> None:
        try:
            rd = RunDir(run_dir)
            r = rd.recipe()
            opts = {k: v for k, v in kw.items() if v}
            if opts.get("formats"):  # built in place even when the stage is up to date; the other formats stay
                _check_formats(r, rd.root, opts["formats"])
            options = {stage: opts} if opts else None
            _run(r, rd, only=[stage], force=(stage,) if force else (), options=options)
        except TlcError as exc:
            _fail(exc)

    doc += ("\n\nReads RUN_DIR/recipe.resolved.yaml (the recipe as the run resolved it), not the recipe file: "
            "after editing the recipe, use `tlc run RECIPE --run-dir RUN_DIR`.")
    cmd.__doc__ = doc
    command = click.Command(
        stage,
        callback=cmd,
        help=doc,
        params=[
            click.Argument(["run_dir"], type=click.Path(file_okay=False, path_type=Path)),
            click.Option(["--force"], is_flag=True, help="Re-run even if up to date."),
            *(extra_options or []),
        ],
    )
    main.add_command(command)


def _check_formats(recipe: Recipe, root: Path, formats: list[str]) -> None:
    """Refuse, before anything is written, a format no family knows or this run's family cannot write."""
    from tlc_export.tasks import families, family_of

    family = family_of(recipe)
    known = {f for fam in families().values() for f in fam.export_formats}
    unknown = [f for f in formats if f not in known]
    if unknown:
        raise TlcError(f"--formats: unknown export format(s) {', '.join(map(repr, unknown))}; "
                       f"valid formats for this {family.name} run: {', '.join(family.export_formats)}")
    lacking = [f for f in formats if f not in family.export_formats]
    if lacking:
        raise TlcError(f"--formats: {root} is a {family.name} run, which has no {', '.join(lacking)}; "
                       f"its formats: {', '.join(family.export_formats)}")


def _formats_option() -> click.Option:
    def split(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> list[str] | None:
        out = [f for v in value for f in v.split(",") if f]
        return out or None

    return click.Option(["--formats"], multiple=True, callback=split,
                        help="Comma-separated export formats to build (missing files only; the other formats' "
                             "files and rows stay). The bench and report are then marked stale.")


_stage_command("pretrain", "Pretrain every size of RUN_DIR's recipe (resumes from checkpoints).")
_stage_command("finetune", "Finetune every pretrained size in RUN_DIR.")
_stage_command("compress", "Prune and quantize every finetuned size in RUN_DIR.")
_stage_command("export", "Export RUN_DIR's variants to ONNX / TensorRT and validate them.", [_formats_option()])
_stage_command("bench", "Measure storage, latency and accuracy of every exported variant in RUN_DIR.")


def _print_card(root: Path) -> None:
    """The reproduction card the report stage wrote, as a table (nothing when there is no report)."""
    from tlc_export.report.claims import read_card
    from tlc_export.report.claims.render import card_table

    card = read_card(root / "report")
    if card is not None:
        console.print(card_table(card))
        console.print(f"claims: {root / 'report' / 'claims.json'} (evidence, numbers and rules in index.html#claims)")


@main.command("report")
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Re-run even if up to date.")
@click.option("--compare", is_flag=True,
              help="Put the claims cards of several RUN_DIR side by side (e.g. two budgets or two seeds); "
                   "a claim whose status differs between runs is marked unstable.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --compare: also write claims_compare.json, .md and .html into this folder.")
def report(run_dirs: tuple[Path, ...], force: bool, compare: bool, out: Path | None) -> None:
    """Write RUN_DIR/report/index.html, summary.md and claims.json, and print the claims card.

    One RUN_DIR (a run, or a sweep's parent run directory); with --compare, several: their claims
    cards side by side. Reads RUN_DIR/recipe.resolved.yaml, not the recipe file you may have edited.
    """
    try:
        if compare:
            _compare(run_dirs, out)
            return
        if len(run_dirs) != 1:
            raise TlcError(f"got {len(run_dirs)} run directories; pass one, or several with --compare")
        if out is not None:
            raise TlcError("--out is for --compare; a single run's report goes to RUN_DIR/report/")
        from tlc_export.sweep.run import is_sweep_dir

        if is_sweep_dir(run_dirs[0]):
            from tlc_export.report.sweep import write_sweep_report

            with writer_lock(run_dirs[0], "`tlc report`"):
                write_sweep_report(run_dirs[0], console=console)
            console.print(f"sweep report: {run_dirs[0] / 'report' / 'index.html'}")
            _print_card(run_dirs[0])
            return
        rd = RunDir(run_dirs[0])
        _run(rd.recipe(), rd, only=["report"], force=("report",) if force else ())
        _print_card(rd.root)
    except TlcError as exc:
        _fail(exc)


def _compare(run_dirs: tuple[Path, ...], out: Path | None) -> None:
    from tlc_export import atomic
    from tlc_export.report.claims import compare_runs, compare_table
    from tlc_export.report.claims.render import compare_html, compare_markdown

    cmp = compare_runs(list(run_dirs))
    console.print(compare_table(cmp))
    if cmp["unstable"]:
        console.print(f"[red]unstable[/red] (the status flips between runs): claim(s) {', '.join(map(str, cmp['unstable']))}")
    if out is not None:
        atomic.write_json(out / "claims_compare.json", cmp)
        atomic.write_text(out / "claims_compare.md", compare_markdown(cmp))
        atomic.write_text(out / "claims_compare.html", compare_html(cmp))
        console.print(f"comparison: {out / 'claims_compare.html'}")


@main.command("package")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle folder to write (new or empty; see --force).")
@click.option("--variant", default=None, help="Ship this variant (e.g. 4L-192H.s00.b8: size, sparsity %, bits); see --format.")
@click.option("--format", "fmt", default=None,
              help="Export format to ship (default: the one carrying the variant's own weights: onnx-fp32 / -int8 / -int4).")
@click.option("--max-storage-mb", type=float, default=None,
              help="Ship the report's answer for this storage budget (the most accurate variant on dev that fits).")
@click.option("--max-latency-ms", type=float, default=None,
              help="Ship the report's answer for this p50 latency budget (smallest timed batch unless --batch).")
@click.option("--backend", default=None, help="With --max-latency-ms: only this bench backend's rows (e.g. onnxruntime).")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="With --max-latency-ms: latency at this batch size.")
@click.option("--name", default=None, help="Triton model name (default: the variant, with . replaced by _).")
@click.option("--max-batch-size", type=click.IntRange(min=0), default=None,
              help="Triton max_batch_size (default 32; a TensorRT engine's largest profile).")
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
@click.option("--dry-run", is_flag=True, help="Only print which (variant, format) would be packaged, and why.")
@click.option("--allow-other-gpu", is_flag=True,
              help="Package a TensorRT engine although this machine's GPU is not the one it was built on.")
def package(run_dir: Path, out: Path, variant: str | None, fmt: str | None, max_storage_mb: float | None,
            max_latency_ms: float | None, backend: str | None, batch: int | None, name: str | None,
            max_batch_size: int | None, force: bool, dry_run: bool, allow_other_gpu: bool) -> None:
    """Write one variant of RUN_DIR as a self-contained serving bundle in --out.

    A classification bundle holds model.onnx, config.json (with label names), the tokenizer files,
    tlc.json (provenance), a README and a Triton model repository (triton/<name>/); a translation
    bundle holds encoder.onnx + decoder.onnx, the tokenizer, tlc.json (BLEU with intervals, decoding,
    checksums) and a README. Choose what to ship with --variant [--format], or by dev score within
    --max-storage-mb or --max-latency-ms [--backend --batch] (the report's answer). Nothing is written
    unless the whole bundle is.
    """
    try:
        from tlc_export.package.out import check_out
        from tlc_export.tasks import family_of_run

        check_out(out.absolute(), force)
        family = family_of_run(run_dir)
        # It may export a missing pair into RUN_DIR/package/: one writer per run directory.
        with writer_lock(run_dir, "`tlc package`") if not dry_run else contextlib.nullcontext():
            choice = family.choose_bundle(run_dir, variant=variant, fmt=fmt, max_storage_mb=max_storage_mb,
                                          max_latency_ms=max_latency_ms, backend=backend, batch=batch,
                                          export_missing=not dry_run)
            if dry_run:
                from tlc_export.package.readme import selection_text

                console.print(f"would package {choice.variant} ({choice.format}), chosen as "
                              f"{selection_text(choice.selection)}"
                              + ("; not exported yet: `tlc package` would export it first" if choice.export is None
                                 else ""))
                return
            meta = family.write_bundle(run_dir, choice, out, force=force, name=name, max_batch_size=max_batch_size,
                                       allow_other_gpu=allow_other_gpu)
    except TlcError as exc:
        _fail(exc)
        return
    for line in family.package_summary(meta, out):
        console.print(line)


@main.command("predict")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--file", "--input", "file_", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Run every row of a .csv/.tsv/.jsonl file, or every line of a .txt file.")
@click.option("--text-column", default="text", show_default=True, help="Column (or JSON key) holding the text.")
@click.option("--pair-column", default=None, help="Classification: column holding the second text of a pair task.")
@click.option("--label-column", default=None,
              help="Classification: column holding gold labels: also print the accuracy with its 95 % interval.")
@click.option("--reference-column", default=None,
              help="Translation: column holding reference translations: also print BLEU and chrF with intervals.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Texts per ONNX Runtime call / greedy loop (inputs are sorted by length first).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads (default: all cores).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one JSON line per input here instead of printing a table.")
@click.option("--jsonl", is_flag=True, help="Print JSON lines to stdout instead of a table.")
def predict(bundle: Path, texts: tuple[str, ...], file_: Path | None, text_column: str, pair_column: str | None,
            label_column: str | None, reference_column: str | None, batch_size: int, threads: int | None,
            output: Path | None, jsonl: bool) -> None:
    """Run a bundle from `tlc package` on TEXTS (or --file rows): a classifier's label and probabilities,
    or a translation model's translation (greedy).

    Runs with ONNX Runtime, tokenizers and NumPy only (no torch).
    """
    from tlc_export.tasks import family_of_bundle

    try:
        family_of_bundle(bundle).predict_cli(
            console, bundle, list(texts), file_, text_column=text_column, pair_column=pair_column,
            label_column=label_column, reference_column=reference_column, batch_size=batch_size, threads=threads,
            output=output, jsonl=jsonl)
    except TlcError as exc:
        _fail(exc)


def _family_commands() -> None:
    """The commands a task family adds (`TaskFamily.commands`, e.g. translation's `tlc translate`), their
    errors reported as every command's."""
    from tlc_export.tasks import families

    for family in families().values():
        for cmd in family.commands():
            run = cmd.callback

            def guarded(*args: Any, _run: Any = run, **kw: Any) -> Any:
                try:
                    return _run(*args, **kw)
                except TlcError as exc:
                    _fail(exc)

            cmd.callback = guarded
            main.add_command(cmd)


_family_commands()

if __name__ == "__main__":
    main()


@main.command("plan")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--budget-s", type=float, default=None,
              help="Training seconds per size of the full run (default: the recipe's pretrain.time_budget_s).")
@click.option("--max-storage-mb", type=float, default=None, help="Storage limit of the deployed artifact (MB = 10^6 bytes).")
@click.option("--max-latency-ms", type=float, default=None, help="Latency limit of one batch (--latency-batch) on --backend.")
@click.option("--backend", type=click.Choice(["onnxruntime", "torch-eager"]), default="onnxruntime",
              help="Where latency is measured (an exported pilot checkpoint, fp32).")
@click.option("--latency-batch", type=int, default=None, help="The bench batch size the latency limit applies to "
              "(default: the smallest of bench.batch_sizes).")
@click.option("--pilot-fraction", type=float, default=0.1, help="Each pilot is this first fraction of the full run.")
@click.option("--pilot-evals", type=int, default=10, help="Validation points per pilot (sets pretrain.eval_every_s).")
@click.option("--level", type=float, default=0.9, help="Interval level of the predictions.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the plan goes (default: plans/<recipe name>); the pilots' run directory is OUT/run.")
@click.option("--check", "check_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Backtest: a finished run directory of the planned recipe (with --plan).")
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The plan.json to backtest (with --check).")
def plan_cmd(recipe: Path | None, budget_s: float | None, max_storage_mb: float | None, max_latency_ms: float | None,
             backend: str, latency_batch: int | None, pilot_fraction: float, pilot_evals: int, level: float,
             out: Path | None, check_dir: Path | None, plan_file: Path | None) -> None:
    """Pilot every size for its first fraction of the budget, extrapolate, and recommend what to train.

    `tlc plan --check RUN_DIR --plan OUT/plan.json` compares a plan with a finished run.
    """
    from tlc_export.plan.planner import PlanOptions, check_options, make_plan, plan_recipe

    try:
        if check_dir is not None or plan_file is not None:
            _plan_check(check_dir, plan_file)
            return
        if recipe is None:
            raise TlcError("tlc plan needs a RECIPE (or --check RUN_DIR --plan PLAN.json to backtest)")
        r = load_plan(recipe)
        if not isinstance(r, Recipe):
            raise TlcError(f"{recipe}: a sweep recipe; tlc plan takes one recipe (its grid of sizes)")
        opts = PlanOptions(budget_s=budget_s if budget_s is not None else r.pretrain.time_budget_s if r.pretrain else 0.0,
                           pilot_fraction=pilot_fraction, pilot_evals=pilot_evals, max_storage_mb=max_storage_mb,
                           max_latency_ms=max_latency_ms, backend=backend, latency_batch=latency_batch, level=level)
        check_options(opts, r)
        out = out or Path("plans") / recipe.stem
        rd = RunDir(out / "run")
        with writer_lock(rd.root, "`tlc plan`"):
            rd.set_meta(recipe_path=str(recipe.resolve()), recipe_base_dir=str(recipe.resolve().parent))
            _run(plan_recipe(r, opts), rd, only=["data"])
            make_plan(r, rd.root, out, opts, console=console)
        console.print(f"[bold green]plan written[/bold green]: {out / 'plan.json'}, {out / 'extrapolation.png'}, "
                      f"{out / 'recipe.plan.yaml'}")
    except TlcError as exc:
        _fail(exc)


def _plan_check(check_dir: Path | None, plan_file: Path | None) -> None:
    from tlc_export import atomic
    from tlc_export.plan.check import check_plan
    from tlc_export.report.plan_check import check_tables, read_plan

    if check_dir is None or plan_file is None:
        raise TlcError("tlc plan --check RUN_DIR needs --plan PLAN.json too (and the other way round)")
    plan = read_plan(plan_file)
    rd = RunDir(check_dir)
    result = check_plan(plan, check_dir, rd.recipe())
    atomic.write_json(plan_file.parent / "check.json", result)
    console.print(f"[bold]tlc plan --check: {check_dir} against {plan_file}[/bold]")
    for tt in check_tables(result):  # the report of a run made from a plan shows the same tables
        t = Table(title=tt.title, caption=tt.caption or None)
        for col in tt.header:
            t.add_column(col)
        for row in tt.rows:
            t.add_row(*row)
        console.print(t)
    console.print(f"written: {plan_file.parent / 'check.json'}")
