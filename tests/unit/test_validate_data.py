"""`tlc validate` checks the data a recipe names, not only its fields: a glob with no match, a missing
column, a task that leaves a split empty, `bench.batch_sizes: [0]`, with the YAML line of each, all
at once; misspelled keys and files get a "did you mean"; a recipe that stops before the report says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlc_export.cli import main
from tlc_export.errors import RecipeError
from tlc_export.recipe import load_recipe

HEAD = "models: {sizes: [{layers: 1, hidden: 32}]}\npretrain: {time_budget_s: 1}\n"


def _problems(path: Path) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    return {p.path: (p.line, p.message) for p in e.value.problems}


def _table(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_every_data_problem_at_once_with_its_line(tmp_path: Path) -> None:
    _table(tmp_path / "reviews.csv", ["review,label", *(f"review {i},{i % 2}" for i in range(40))])
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("some text\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "data:\n"
        "  sources:\n"
        "    - {kind: text, path: 'corpsu/*.txt'}\n"          # line 3: no file matches
        "    - {kind: csv, path: reviews.csv, column: body}\n"  # line 4: no column 'body'
        + HEAD +
        "finetune:\n"
        "  task: {kind: csv, path: reviews.csv}\n"              # line 8: no column 'text'
        "compress: {}\nexport: {}\n"
        "bench: {batch_sizes: [0, 4]}\n"                        # line 11: a field error
        "report: {}\n")
    probs = _problems(recipe)  # a field error and the files' problems, all in one run
    assert set(probs) == {"bench.batch_sizes[0]", "data.sources[0].path", "data.sources[1].column",
                          "finetune.task.text_column"}
    assert probs["bench.batch_sizes[0]"] == (11, "Input should be greater than or equal to 1")
    recipe.write_text(recipe.read_text().replace("[0, 4]", "[1, 4]"))
    probs = _problems(recipe)
    assert set(probs) == {"data.sources[0].path", "data.sources[1].column", "finetune.task.text_column"}
    assert probs["data.sources[0].path"] == (3, f"no file matches 'corpsu/*.txt' (looked for {tmp_path / 'corpsu/*.txt'})")
    assert probs["data.sources[1].column"][0] == 4
    assert "no column 'body' (columns: 'review', 'label')" in probs["data.sources[1].column"][1]
    assert probs["finetune.task.text_column"][0] == 8
    assert "no column 'text' (from `finetune.task.text_column`)" in probs["finetune.task.text_column"][1]

    res = CliRunner().invoke(main, ["validate", str(recipe)])
    assert res.exit_code == 2 and "3 problem(s)" in res.output and f"{recipe}:3:" in " ".join(res.output.split())


def test_a_task_with_an_empty_split_and_an_unreadable_file(tmp_path: Path) -> None:
    _table(tmp_path / "task.csv", ["text,label", "good,1", "bad,0"])  # two examples cannot fill three splits
    recipe = tmp_path / "r.yaml"
    recipe.write_text(HEAD + "finetune:\n  task: {kind: csv, path: task.csv}\n")
    line, msg = _problems(recipe)["finetune.task"]
    assert line == 4 and re.search(r"2 examples give an empty split \(train \d, dev \d, test \d\)", msg)
    (tmp_path / "task.csv").write_bytes(b"text,label\ncaf\xe9,1\n")
    line, msg = _problems(recipe)["finetune.task.path"]
    assert line == 4 and "utf-8" in msg.lower()


def test_did_you_mean_for_keys_files_and_lr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _table(tmp_path / "task.csv", ["text,label", *(f"t{i},{i % 2}" for i in range(200))])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(HEAD.replace("time_budget_s", "time_budgte_s") + "finetune:\n  task: {kind: csv, path: task.cvs}\n")
    probs = _problems(recipe)
    assert probs["pretrain.time_budgte_s"][1] == "unknown key `time_budgte_s`; did you mean `time_budget_s`?"
    assert "pretrain.time_budget_s" in probs  # and the required field it was meant to be
    recipe.write_text(HEAD + "finetune:\n  task: {kind: csv, path: task.cvs}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe)
    assert e.value.problems[0].hint == f"did you mean {tmp_path / 'task.csv'}?"

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "quickstart.yaml").write_text(HEAD)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["validate", "quickstart.yml"])
    assert res.exit_code == 2 and "did you mean recipes/quickstart.yaml?" in res.output

    for value, ok in (("2.0e-4", True), ("2e-4", True), ("[1e-4, 2.0e-4]", True), ("fast", False)):
        recipe.write_text(HEAD + f"finetune:\n  lr: {value}\n")
        if ok:
            r = load_recipe(recipe)
            assert r.finetune is not None and all(isinstance(x, float) for x in r.finetune.lr)
        else:
            assert _problems(recipe)["finetune.lr"] == (
                4, "`lr` takes a number (e.g. 2.0e-4) or a list of numbers ([1.0e-4, 2.0e-4]), got 'fast'")


def test_validate_says_where_a_recipe_stops(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(HEAD + "finetune: {}\n")
    res = CliRunner().invoke(main, ["validate", str(recipe)])
    said = " ".join(res.output.split())
    assert res.exit_code == 0 and "is valid" in said
    assert "no `compress:`, `export:`, `bench:`, `report:` section(s): `tlc run` stops after finetune" in said
    recipe.write_text(HEAD + "finetune: {}\ncompress: {}\nexport: {}\nbench: {}\nreport: {}\n")
    res = CliRunner().invoke(main, ["validate", str(recipe)])
    assert res.exit_code == 0 and "stops after" not in res.output
