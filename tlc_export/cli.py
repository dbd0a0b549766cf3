"""`tlc` command line: run a recipe, validate it, inspect a run directory, or run one stage."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tlc_export import __version__, distributed
from tlc_export.errors import RecipeError, TlcError
from tlc_export.recipe import Recipe, load_recipe, parse_recipe, schema_lines
from tlc_export.rundir import RESOLVED_RECIPE, RunDir

console = Console()
err_console = Console(stderr=True)

STAGE_ORDER = ["data", "pretrain", "finetune", "compress", "export", "bench", "report"]


def _fail(exc: Exception) -> None:
    code = 2 if isinstance(exc, RecipeError) else 1
    err_console.print(f"[bold red]error:[/bold red] {exc}", markup=True, highlight=False)
    sys.exit(code)


def _recipe_from_run_dir(run_dir: RunDir) -> Recipe:
    """A run directory remembers its recipe (resolved) and where relative paths point."""
    path = run_dir.root / RESOLVED_RECIPE
    if not path.exists():
        raise TlcError(f"{run_dir.root}: not a run directory (no {RESOLVED_RECIPE}); start one with `tlc run RECIPE`")
    base = run_dir.load_manifest().get("recipe_base_dir")
    return parse_recipe(path.read_text(), file=str(path), base_dir=Path(base) if base else run_dir.root)


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
              help="Where results go (default: runs/<recipe name>).")
@click.option("--force", multiple=True, type=click.Choice(STAGE_ORDER),
              help="Re-run this stage even if it is up to date (repeatable).")
@click.option("--until", type=click.Choice(STAGE_ORDER), default=None, help="Stop after this stage.")
def run(recipe: Path, run_dir: Path | None, force: tuple[str, ...], until: str | None) -> None:
    """Run every stage of RECIPE; finished stages are skipped, interrupted ones resume."""
    try:
        r = load_recipe(recipe)
        rd = RunDir(run_dir or Path("runs") / recipe.stem)
        if distributed.is_main():
            rd.root.mkdir(parents=True, exist_ok=True)
            rd.set_meta(recipe_path=str(recipe.resolve()), recipe_base_dir=str(recipe.resolve().parent))
        only = STAGE_ORDER[: STAGE_ORDER.index(until) + 1] if until else None
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


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--explain", is_flag=True, help="Also print every field with its documentation.")
def validate(recipe: Path, explain: bool) -> None:
    """Check RECIPE and list every problem with its YAML line; writes nothing."""
    try:
        r = load_recipe(recipe)
    except RecipeError as exc:
        _fail(exc)
        return
    sizes = ", ".join(s.name for s in r.models.grid())
    stages = [s for s in ["finetune", "compress", "export", "bench", "report"] if getattr(r, s) is not None]
    console.print(f"[green]✓ {recipe}[/green] is valid: sizes {sizes}; budget {r.pretrain.time_budget_s:g}s each; "
                  f"stages data, pretrain{', ' + ', '.join(stages) if stages else ''}")
    if explain:
        _print_schema()


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
    """Show a run directory's manifest as a table."""
    rd = RunDir(run_dir)
    if not rd.exists():
        _fail(TlcError(f"{run_dir}: no manifest.json here; is it a run directory?"))
    m = rd.load_manifest()
    table = Table(title=f"{run_dir} — {m.get('recipe_name', '')}")
    for col in ("stage", "status", "cache key", "seconds", "outputs / error"):
        table.add_column(col, overflow="fold")
    records = rd.records()
    for name in STAGE_ORDER:
        rec = records.get(name)
        if rec is None:
            table.add_row(name, "[dim]not run[/dim]", "", "", "")
            continue
        colour = {"done": "green", "running": "yellow", "failed": "red"}.get(rec.status, "white")
        detail = rec.error or ", ".join(f"{k}" for k in list(rec.outputs)[:6])
        secs = f"{rec.seconds:.1f}" if rec.seconds is not None else ""
        table.add_row(name, f"[{colour}]{rec.status}[/{colour}]", (rec.cache_key or "")[:10], secs, detail)
    console.print(table)


@main.group()
def data() -> None:
    """Built-in data sets."""


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
        from tlc_export.data import prepare_data

        r = load_recipe(recipe)
        info = prepare_data(r)
        for name, desc in info.items():
            console.print(f"[green]✓[/green] {name}: {desc}")
        if fetch_only:
            return
        if workers is not None:
            r.data.workers = workers
        rd = RunDir(run_dir or Path("runs") / recipe.stem)
        rd.root.mkdir(parents=True, exist_ok=True)
        rd.set_meta(recipe_path=str(recipe.resolve()), recipe_base_dir=str(recipe.resolve().parent))
        _run(r, rd, only=["data"])
        console.print(f"[bold green]data ready[/bold green] — {rd.root / 'data' / 'tokens'}")
    except TlcError as exc:
        _fail(exc)


def _stage_command(stage: str, doc: str, extra_options: list[click.Option] | None = None) -> None:
    def cmd(run_dir: Path, force: bool, **kw: Any) -> None:
        try:
            rd = RunDir(run_dir)
            r = _recipe_from_run_dir(rd)
            opts = {k: v for k, v in kw.items() if v}
            options = {stage: opts} if opts else None
            _run(r, rd, only=[stage], force=(stage,) if force else (), options=options)
        except TlcError as exc:
            _fail(exc)

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


def _formats_option() -> click.Option:
    def split(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> list[str] | None:
        out = [f for v in value for f in v.split(",") if f]
        return out or None

    return click.Option(["--formats"], multiple=True, callback=split,
                        help="Comma-separated export formats, overriding the recipe's `export.formats`.")


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
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Re-run even if up to date.")
@click.option("--compare", is_flag=True,
              help="Put the claims cards of several RUN_DIRS side by side (e.g. two budgets or two seeds); "
                   "a claim whose status differs between runs is marked unstable.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --compare: also write claims_compare.json, .md and .html into this folder.")
def report(run_dirs: tuple[Path, ...], force: bool, compare: bool, out: Path | None) -> None:
    """Write RUN_DIR/report/index.html, summary.md and claims.json, and print the claims card.

    With --compare RUN_A RUN_B …: the claims cards of several runs side by side.
    """
    try:
        if compare:
            _compare(run_dirs, out)
            return
        if len(run_dirs) != 1:
            raise TlcError(f"got {len(run_dirs)} run directories; pass one, or several with --compare")
        if out is not None:
            raise TlcError("--out is for --compare; a single run's report goes to RUN_DIR/report/")
        rd = RunDir(run_dirs[0])
        _run(_recipe_from_run_dir(rd), rd, only=["report"], force=("report",) if force else ())
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


if __name__ == "__main__":
    main()
