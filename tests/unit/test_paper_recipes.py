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


FIGURE_2 = {(d, 768) for d in (3, 6, 12, 18, 24)} | {(6, w) for w in (256, 512, 768, 1024, 1536)}


def _gpu_hours_line(path: Path) -> str:
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    return " ".join(line for line in header if "GPU-hours" in line)


def test_paper_recipes_train_figure_2s_sizes_and_state_their_gpu_hours() -> None:
    """An explicit list, not a product: depth at 768 and width at 6 layers, as Figure 2 varies them."""
    for name in ("paper-roberta.yaml", "paper-roberta-1gpu.yaml", "paper-roberta-builtin.yaml"):
        recipe = load_recipe(RECIPES / name)
        assert recipe.models.sizes is not None and recipe.models.depth is None, name
        assert {(s.layers, s.hidden) for s in recipe.models.grid()} == FIGURE_2, name
        assert all(s.num_heads == s.hidden // 64 for s in recipe.models.grid())
    full, one = load_recipe(RECIPES / "paper-roberta.yaml"), load_recipe(RECIPES / "paper-roberta-1gpu.yaml")
    assert "770 GPU-hours" in _gpu_hours_line(RECIPES / "paper-roberta.yaml")
    assert "23 GPU-hours" in _gpu_hours_line(RECIPES / "paper-roberta-1gpu.yaml")
    # One day on one GPU: the pretraining alone (9 budgets) leaves hours for data, finetuning, export, bench.
    assert len(one.models.grid()) * one.pretrain.time_budget_s <= 20 * 3600
    assert full.data == one.data and full.finetune == one.finetune and full.compress == one.compress
    assert one.pretrain.time_budget_s < full.pretrain.time_budget_s


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
    from tlc_export.tasks.classification.stages.data import DataStage

    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    recipe = load_recipe(RECIPES / "paper-roberta.yaml")
    for src in recipe.data.sources:
        src.max_documents = 40
    recipe.tokenizer.vocab_size = 1000
    out = tmp_path / "run" / "data"
    out.mkdir(parents=True)
    outputs = DataStage().run(StageContext(recipe, RunDir(tmp_path / "run"), out, {}, console=Console(quiet=True)))
    assert outputs["documents"]["train"] + outputs["documents"]["val"] == 80


def test_paper_mt_recipe_is_the_papers_wmt14_setting() -> None:
    """recipes/paper-mt.yaml: WMT14 En→Fr from the hub, newstest2013 dev / newstest2014 test, the §3 grid."""
    recipe = load_recipe(RECIPES / "paper-mt.yaml")
    mt = recipe.translation
    assert mt is not None and (mt.source_lang, mt.target_lang) == ("en", "fr")
    assert (mt.data.kind, mt.data.name, mt.data.config) == ("hf", "wmt/wmt14", "fr-en")
    assert mt.data.hf_splits == ("train", "validation", "test")
    assert mt.tokenizer.shared and mt.tokenizer.vocab_size == 32000
    grid = mt.grid()
    assert {(s.layers, s.hidden) for s in grid} == {(d, w) for d in (2, 6, 8) for w in (128, 256, 512, 1024, 2048)}
    assert all(s.num_heads == s.hidden // 64 and s.ffn_size == 4 * s.hidden for s in grid)
    assert mt.train.label_smoothing == 0.1 and mt.train.precision == "bf16" and mt.train.device == "cuda"
    assert mt.decoding.strategy == "beam" and mt.decoding.num_beams == 4 and mt.decoding.length_penalty == 0.6
    assert recipe.export is not None and set(recipe.export.formats) == {"onnx-fp32", "onnx-int8-dynamic", "onnx-int8",
                                                                        "onnx-int4"}
    assert recipe.bench is not None and set(recipe.bench.backends) == {"torch-eager", "onnxruntime"}
    assert recipe.compress is not None and recipe.report is not None
