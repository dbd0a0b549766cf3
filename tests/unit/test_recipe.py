"""Recipe validation: every problem at once, with YAML lines; shipped recipes validate."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tlc_export.cli import main
from tlc_export.errors import RecipeError
from tlc_export.recipe import parse_recipe, schema_lines
from tlc_export.sweep.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]

BAD = """\
name: bad
data:
  sources:
    - kind: wikipedia
  typo_field: 3
models:
  sizes:
    - {layers: 2, hidden: 100, heads: 3}
    - {layers: two, hidden: 128}
pretrain:
  time_budget_s: 0
"""


def test_every_problem_reported_with_its_line() -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(BAD, file="bad.yaml")
    problems = {p.path: p for p in info.value.problems}
    assert set(problems) == {
        "data.sources[0].kind",
        "data.typo_field",
        "models.sizes[0]",
        "models.sizes[1].layers",
        "pretrain.time_budget_s",
    }
    assert problems["data.sources[0].kind"].line == 4
    assert problems["data.typo_field"].line == 5
    assert problems["models.sizes[0]"].line == 8
    assert "divisible" in problems["models.sizes[0]"].message
    assert problems["models.sizes[1].layers"].line == 9
    assert problems["pretrain.time_budget_s"].line == 11
    text = str(info.value)
    assert "bad.yaml:5" in text and "unknown key `typo_field`" in text
    without_hint = {k for k, p in problems.items() if not p.hint}
    assert without_hint <= {"models.sizes[0]"}  # every problem says how to fix it; the grid one says why in its message


def test_malformed_yaml_gets_line_and_column() -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe("models:\n  sizes: [\npretrain: {a: 1\n", file="m.yaml")
    (p,) = info.value.problems
    assert "malformed YAML" in p.message
    assert p.line is not None and p.column is not None


@pytest.mark.parametrize(
    "models, needle",
    [
        ("models: {sizes: []}", "empty"),
        ("models: {depth: [2], width: []}", "empty"),
        ("models: {}", "empty"),
        ("models: {sizes: [{layers: 2, hidden: 128}], depth: [2], width: [128]}", "either"),
        ("models: {sizes: [{layers: 2, hidden: 128}, {layers: 2, hidden: 128}]}", "duplicate"),
    ],
)
def test_impossible_grids_rejected(models: str, needle: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(models + "\npretrain: {time_budget_s: 5}\n")
    assert any(needle in p.message for p in info.value.problems)


def test_grid_product_and_defaults() -> None:
    r = parse_recipe("models: {depth: [6, 3], width: [512, 256]}\npretrain: {time_budget_s: 5}\n")
    names = [s.name for s in r.models.grid()]
    assert sorted(names) == sorted(["3L-256H", "3L-512H", "6L-256H", "6L-512H"])
    assert names[0] == "3L-256H" and names[-1] == "6L-512H"  # smallest first
    size = r.models.grid()[-1]
    assert size.num_heads == 8 and size.ffn_size == 2048


def test_section_chain_and_cross_field_checks(tmp_path: Path) -> None:
    base = "models: {sizes: [{layers: 1, hidden: 64}]}\npretrain: {time_budget_s: 5}\n"
    with pytest.raises(RecipeError, match="needs section `finetune`"):
        parse_recipe(base + "compress: {}\n")
    with pytest.raises(RecipeError, match="max_seq_len"):
        parse_recipe(base + "data: {max_seq_len: 32}\nfinetune: {max_length: 64}\n")
    with pytest.raises(RecipeError, match="file not found"):
        parse_recipe(base + "finetune: {task: {kind: csv, path: nope.csv}}\n", base_dir=tmp_path)


def test_shipped_recipes_validate() -> None:
    from tlc_export.sweep.plan import Sweep

    recipes = sorted((ROOT / "recipes").glob("*.yaml"))
    assert {p.name for p in recipes} >= {"quickstart.yaml", "paper-roberta.yaml", "ablation-batch.yaml",
                                         "ablation-data.yaml"}
    for path in recipes:
        plan = load_plan(path)
        if isinstance(plan, Sweep):  # an ablation: every point compares at least two sizes
            assert len(plan.points) >= 3 and all(len(p.recipe.models.grid()) >= 2 for p in plan.points), path
        elif plan.translation is not None:  # the paper's second system: at least two sizes to compare
            assert len(plan.translation.grid()) >= 2, path
        else:
            assert len(plan.models.grid()) >= 3, path


def test_validate_cli_writes_nothing_and_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2
    assert sorted(tmp_path.rglob("*")) == before
    run = CliRunner().invoke(main, ["run", str(bad), "--run-dir", str(tmp_path / "run")])
    assert run.exit_code == 2
    assert not (tmp_path / "run").exists()


def test_schema_documents_every_field() -> None:
    rows = schema_lines()
    paths = {r[0] for r in rows}
    assert {"pretrain.time_budget_s", "models.sizes[].hidden", "compress.quantize.bits", "data.sources[].kind"} <= paths
    undocumented = [r[0] for r in rows if not r[3]]
    assert undocumented == []


def test_quickstart_learns_a_genre_task_and_rt_polarity_keeps_its_own_recipe() -> None:
    quick = load_plan(ROOT / "recipes" / "quickstart.yaml")
    assert quick.finetune.task.kind == "brown-genre" and [s.kind for s in quick.data.sources] == ["brown"]
    assert quick.finetune.patience is not None and quick.finetune.patience >= 2  # trains to a plateau, capped
    rt = load_plan(ROOT / "recipes" / "rt-polarity.yaml")
    assert rt.finetune.task.kind == "rt-polarity" and len(rt.models.grid()) >= 3


@pytest.mark.parametrize("sizes, path", [("[0]", "bench.batch_sizes[0]"), ("[1, -4]", "bench.batch_sizes[1]"),
                                         ("[]", "bench.batch_sizes")])
def test_bench_batch_sizes_must_be_positive(tmp_path: Path, sizes: str, path: str) -> None:
    text = (f"name: b\nmodels:\n  sizes: [{{layers: 2, hidden: 64}}]\npretrain: {{time_budget_s: 5}}\nbench:\n"
            f"  batch_sizes: {sizes}\n")
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, file="b.yaml")
    (p,) = info.value.problems
    assert p.path == path and p.line == 6
    bad = tmp_path / "b.yaml"
    bad.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2 and "b.yaml:6" in result.output and "batch_sizes" in result.output


def test_integer_zero_point_on_a_symmetric_grid_is_rejected_at_its_line() -> None:
    text = ("models: {sizes: [{layers: 1, hidden: 64}]}\npretrain: {time_budget_s: 5}\ncompress:\n  quantize:\n"
            "    symmetric: true\n    zero_point: integer\n")
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, file="z.yaml")
    (p,) = info.value.problems
    assert p.path == "compress.quantize.zero_point" and p.line == 6
    assert "integer" in p.message and "symmetric" in p.message


def test_the_default_grid_has_integer_zero_points_and_a_symmetric_grid_none() -> None:
    from tlc_export.compress.quantize import QuantConfig

    base = "models: {sizes: [{layers: 1, hidden: 64}]}\npretrain: {time_budget_s: 5}\nfinetune: {}\n"
    default = parse_recipe(base + "compress: {}\n", file="d.yaml").compress.quantize
    assert default.zero_point == "integer" and QuantConfig.from_recipe(default, 8).integer_zero_point
    paper = parse_recipe(base + "compress: {quantize: {zero_point: paper}}\n", file="p.yaml").compress.quantize
    assert not QuantConfig.from_recipe(paper, 8).integer_zero_point
    # the default does not collide with a symmetric grid (only an explicit `integer` there is an error)
    sym = parse_recipe(base + "compress: {quantize: {symmetric: true}}\n", file="s.yaml").compress.quantize
    q = QuantConfig.from_recipe(sym, 8)
    assert q.symmetric and not q.integer_zero_point
