"""The tiny end-to-end run, made once per session and shared (read-only) by the e2e tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_recipe import RECIPE, _write_data

from tlc_export.cli import main


@dataclass(frozen=True)
class TinyRun:
    root: Path  # the folder holding the recipe, its data and run/
    recipe: Path
    run_dir: Path
    output: str  # what `tlc run` printed
    exit_code: int
    home: Path  # TLC_HOME the run used


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """`tlc run` of the micro recipe (every stage). Tests must not change its run directory; copy it first."""
    root = tmp_path_factory.mktemp("tiny")
    _write_data(root)
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE)
    run_dir = root / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLC_HOME", str(root / "home"))
        result = CliRunner().invoke(main, ["run", str(recipe), "--run-dir", str(run_dir)], catch_exceptions=False)
    return TinyRun(root, recipe, run_dir, result.output, result.exit_code, root / "home")
