"""Sweep expansion: zip and product, bad paths, mismatched zip lengths, problems at the swept value's line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tlc_export.cli import main
from tlc_export.errors import RecipeError
from tlc_export.recipe import parse_recipe
from tlc_export.sweep.plan import Sweep, parse_plan, parse_point

BASE = """\
name: abl
models: {sizes: [{layers: 1, hidden: 32}, {layers: 2, hidden: 64}]}
pretrain: {time_budget_s: 5, batch_size: 8, lr: 1.0e-3}
"""


def _sweep(body: str) -> Sweep:
    plan = parse_plan(BASE + body, file="abl.yaml")
    assert isinstance(plan, Sweep)
    return plan


def test_product_is_every_combination_last_path_fastest() -> None:
    s = _sweep("sweep:\n  pretrain.batch_size: [8, 16]\n  data.fraction: [1.0, 0.05, 0.01]\n")
    assert s.mode == "product" and len(s.points) == 6
    got = [(p.recipe.pretrain.batch_size, p.recipe.data.fraction) for p in s.points]
    assert got == [(8, 1.0), (8, 0.05), (8, 0.01), (16, 1.0), (16, 0.05), (16, 0.01)]
    assert [p.index for p in s.points] == list(range(6))
    assert len({p.id for p in s.points}) == 6 and s.points[4].id.startswith("p04-")
    # Everything not swept is the base recipe's, and a point's recipe has no sweep of its own.
    assert all(p.recipe.pretrain.lr == 1e-3 and p.recipe.sweep is None for p in s.points)
    assert s.points[1].values == {"pretrain.batch_size": 8, "data.fraction": 0.05}


def test_zip_pairs_the_ith_values() -> None:
    s = _sweep("sweep:\n  mode: zip\n  pretrain.batch_size: [256, 2048, 4096]\n  pretrain.lr: [2.0e-4, 1.0e-3, 1.25e-3]\n")
    assert [(p.recipe.pretrain.batch_size, p.recipe.pretrain.lr) for p in s.points] == [
        (256, 2e-4), (2048, 1e-3), (4096, 1.25e-3)]


def test_aliased_and_nested_paths() -> None:
    s = _sweep("pretrain: {time_budget_s: 5, keep_checkpoints_at: [0.5, 1.0]}\nfinetune: {}\n"
               "sweep:\n  finetune.from: [final, every-kept]\n  finetune.task.max_train_examples: [100]\n")
    assert [p.recipe.finetune.start_from for p in s.points] == ["final", "every-kept"]
    assert all(p.recipe.finetune.task.max_train_examples == 100 for p in s.points)


def test_mismatched_zip_lengths_point_at_the_sweep() -> None:
    with pytest.raises(RecipeError) as info:
        _sweep("sweep:\n  mode: zip\n  pretrain.batch_size: [8, 16, 32]\n  pretrain.lr: [1.0e-3, 2.0e-3]\n")
    (p,) = info.value.problems
    assert p.path == "sweep" and p.line == 4
    assert "pretrain.batch_size has 3" in p.message and "pretrain.lr has 2" in p.message


def test_bad_paths_are_named_with_their_line_and_a_suggestion() -> None:
    body = ("sweep:\n"
            "  pretrain.batchsize: [8, 16]\n"  # line 5: typo
            "  nosuch.field: [1]\n"  # line 6: no such section
            "  pretrain.lr.value: [1]\n"  # line 7: inside a value
            "  pretrain.warmup_fraction: 0.1\n"  # line 8: not a list
            "  models.sizes[0].layers: [1]\n"  # line 9: list items cannot be swept
            "  mdoe: zip\n")  # line 10: unknown key
    with pytest.raises(RecipeError) as info:
        _sweep(body)
    probs = {p.path: p for p in info.value.problems}
    assert probs["sweep.pretrain.batchsize"].line == 5
    assert "did you mean `pretrain.batch_size`" in probs["sweep.pretrain.batchsize"].message
    assert probs["sweep.nosuch.field"].line == 6 and "no field `nosuch`" in probs["sweep.nosuch.field"].message
    assert probs["sweep.pretrain.lr.value"].line == 7 and "is a value" in probs["sweep.pretrain.lr.value"].message
    assert probs["sweep.pretrain.warmup_fraction"].line == 8 and "list" in probs["sweep.pretrain.warmup_fraction"].message
    assert probs["sweep.models.sizes[0].layers"].line == 9
    assert probs["sweep.mdoe"].line == 10 and "unknown key" in probs["sweep.mdoe"].message


def test_each_point_is_validated_and_a_bad_value_points_at_its_own_line() -> None:
    body = ("sweep:\n"
            "  mode: zip\n"
            "  pretrain.batch_size:\n"
            "    - 8\n"  # line 7
            "    - 0\n"  # line 8: invalid
            "  pretrain.micro_batch_size: [4, 4]\n")
    with pytest.raises(RecipeError) as info:
        _sweep(body)
    (p,) = info.value.problems
    assert p.path == "pretrain.batch_size" and p.line == 8
    assert "sweep point 1" in p.message and "pretrain.batch_size=0" in p.message


def test_a_combination_invalid_only_together_is_attributed_to_the_sweep() -> None:
    # micro_batch_size 16 is fine with batch 32 and invalid with batch 8: a pretrain-level check.
    with pytest.raises(RecipeError) as info:
        _sweep("sweep:\n  pretrain.batch_size: [8, 32]\n  pretrain.micro_batch_size: [16]\n")
    (p,) = info.value.problems
    assert "sweep point 0" in p.message and "larger than batch_size" in p.message
    assert p.line in (5, 6)  # the swept value behind it


def test_a_base_problem_is_reported_once_at_its_own_line() -> None:
    text = BASE.replace("lr: 1.0e-3", "lr: -1") + "sweep:\n  pretrain.batch_size: [8, 16, 32]\n"
    with pytest.raises(RecipeError) as info:
        parse_plan(text, file="abl.yaml")
    (p,) = info.value.problems
    assert p.path == "pretrain.lr" and p.line == 3 and "sweep point" not in p.message


def test_a_sweep_is_not_a_single_recipe_without_a_point() -> None:
    text = BASE + "sweep:\n  pretrain.batch_size: [8, 16]\n"
    with pytest.raises(RecipeError, match="is a sweep, not one run"):
        parse_recipe(text)
    assert parse_point(text, 1).pretrain.batch_size == 16
    with pytest.raises(RecipeError, match="points 0 … 1"):
        parse_point(text, 2)
    with pytest.raises(RecipeError, match="no `sweep:` section"):
        parse_point(BASE, 0)


def test_cli_validate_and_sweep_list(tmp_path: Path) -> None:
    recipe = tmp_path / "abl.yaml"
    recipe.write_text(BASE + "sweep:\n  pretrain.batch_size: [8, 16]\n  data.fraction: [1.0, 0.5]\n")
    out = CliRunner().invoke(main, ["validate", str(recipe)])
    assert out.exit_code == 0 and "a sweep (product) of 4 points" in out.output
    listed = CliRunner().invoke(main, ["sweep", "list", str(recipe), "--run-dir", str(tmp_path / "runs")])
    assert listed.exit_code == 0, listed.output
    lines = [x for x in listed.output.splitlines() if x.startswith("tlc run")]
    assert len(lines) == 4
    for k, line in enumerate(lines):
        assert f"--point {k}" in line and f"--run-dir {tmp_path / 'runs'}" in line and str(recipe) in line
    assert "tlc report" in listed.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "sweep:\n  mode: zip\n  pretrain.batch_size: [8, 16]\n  pretrain.lr: [1.0e-3]\n")
    res = CliRunner().invoke(main, ["validate", str(bad)])
    text = res.output.replace("\n", "")
    assert res.exit_code == 2 and "bad.yaml:4" in text and "same length" in text
