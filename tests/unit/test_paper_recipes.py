"""recipes/paper-roberta.yaml (Hugging Face data) and its offline twin paper-roberta-builtin.yaml."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest

from tlc_export.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_both_paper_recipes_validate_with_the_same_grid() -> None:
    hub = load_recipe(RECIPES / "paper-roberta.yaml")
    twin = load_recipe(RECIPES / "paper-roberta-builtin.yaml")
    assert {s.kind for s in hub.data.sources} == {"hf"}
    assert [s.name for s in hub.data.sources] == ["wikimedia/wikipedia", "SamuelYang/bookcorpus"]
    assert {s.kind for s in twin.data.sources} == {"brown", "gcide", "austen"}
    assert [s.name for s in twin.models.grid()] == [s.name for s in hub.models.grid()]
    assert twin.pretrain.time_budget_s < hub.pretrain.time_budget_s


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_paper_recipe_data_streams_from_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs the HF recipe's data stage on the first documents of each source, where the hub is reachable."""
    if importlib.util.find_spec("datasets") is None:
        pytest.skip("`datasets` is not installed (pip install 'tlc-export[hf]')")
    if not _hub_reachable():
        pytest.skip("the Hugging Face hub (huggingface.co:443) is not reachable from this machine")
    from rich.console import Console

    from tlc_export.rundir import RunDir
    from tlc_export.stages.base import StageContext
    from tlc_export.stages.data import DataStage

    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    recipe = load_recipe(RECIPES / "paper-roberta.yaml")
    for src in recipe.data.sources:
        src.max_documents = 40
    recipe.tokenizer.vocab_size = 1000
    out = tmp_path / "run" / "data"
    out.mkdir(parents=True)
    outputs = DataStage().run(StageContext(recipe, RunDir(tmp_path / "run"), out, {}, console=Console(quiet=True)))
    assert outputs["documents"]["train"] + outputs["documents"]["val"] == 80
