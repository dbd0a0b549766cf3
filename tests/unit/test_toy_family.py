"""Adding a task family is one folder and one registry line: `tests/fixtures/toy_family/` (one stage) is
registered here, and `tlc run`, `--until` and `tlc status` work for it with no other edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlc_export import tasks
from tlc_export.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECIPE = """name: toy-run
models:
  sizes:
    - {layers: 1, hidden: 32}
    - {layers: 2, hidden: 64, heads: 2}
pretrain: {time_budget_s: 1}
"""


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES))
    monkeypatch.setitem(tasks.REGISTRY, "toy", "toy_family.family:ToyFamily")  # the one registry line


def test_a_registered_family_runs_stops_and_reports_its_status(toy: None, tmp_path: Path) -> None:
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(RECIPE)
    run_dir = tmp_path / "run"
    cli = CliRunner()

    res = cli.invoke(main, ["run", str(recipe), "--run-dir", str(run_dir), "--until", "count"])
    assert res.exit_code == 0, res.output
    assert json.loads((run_dir / "count" / "results.json").read_text()) == {"1L-32H": 12 * 32**2,
                                                                          "2L-64H": 2 * 12 * 64**2}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["count"]  # the family's pipeline only: no data or pretrain stage
    assert manifest["stages"]["count"]["status"] == "done"

    again = cli.invoke(main, ["run", str(recipe), "--run-dir", str(run_dir)])
    assert again.exit_code == 0, again.output
    assert "count: up to date" in again.output

    status = cli.invoke(main, ["status", str(run_dir)], terminal_width=200)
    assert status.exit_code == 0, status.output
    rows = {line.split()[0]: line.split()[1:] for line in status.output.splitlines() if line.split()}
    assert rows["count"][0] == "done"  # the registry's stage names: the toy family's stage is listed


def test_without_its_registry_line_the_recipe_is_the_default_familys(tmp_path: Path) -> None:
    from tlc_export.recipe import parse_recipe

    assert tasks.family_of(parse_recipe(RECIPE)).name == "classification"
    assert "count" not in tasks.stage_names()
