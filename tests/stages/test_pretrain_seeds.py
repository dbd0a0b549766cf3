"""`pretrain.seeds`: every size trained once per seed, and claims 1 and 2 decided over the seeds.

The CPU-sized test recipe of issue 24: two tiny sizes, two pretraining seeds, a step-driven clock.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from test_pretrain_loop import cfg, make_ids, make_tokenizer, step_clock
from token_format import split_docs, write_token_split

from tlc_export.config.data import DataConfig
from tlc_export.config.models import ModelsConfig, ModelSize
from tlc_export.recipe import Recipe
from tlc_export.report.claims import build_card
from tlc_export.report.data import load_report_data
from tlc_export.rundir import RunDir
from tlc_export.stages.base import StageContext
from tlc_export.tasks.classification.stages.pretrain import PretrainStage

SIZES = [ModelSize(layers=1, hidden=32, heads=2), ModelSize(layers=2, hidden=64, heads=2)]


def _recipe(**pretrain: object) -> Recipe:
    return Recipe(models=ModelsConfig(sizes=SIZES, dropout=0.0), pretrain=cfg(time_budget_s=1.0, **pretrain),
                  data=DataConfig(max_seq_len=32))


def _final_loss(curves: Path) -> float:
    return [json.loads(x) for x in curves.read_text().splitlines()][-1]["val_loss"]


def test_two_seeds_train_every_size_twice_and_the_claims_span_the_seeds(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    step_clock(monkeypatch, dt=1 / 32)
    run = RunDir(tmp_path / "run")
    data = run.stage_dir("data")
    make_tokenizer(data / "tokenizer")
    for split, ids in (("train", make_ids(20_000)), ("val", make_ids(2_000, seed=1))):
        docs = split_docs(ids)
        write_token_split(data / "tokens", split, docs, [0] * len(docs), ["counting"], data / "tokenizer")
    recipe = _recipe(seeds=[3, 4])
    out = run.stage_dir("pretrain")
    out.mkdir(parents=True)
    PretrainStage().run(StageContext(recipe, run, out, {}, console=Console(quiet=True)))

    results = json.loads((out / "results.json").read_text())
    assert results["seed"] == 3 and [r["seed"] for r in results["replicas"]] == [4]
    # The first seed keeps a one-seed run's folders (finetuning reads them); the second trains beside them.
    assert [r["checkpoint"] for r in results["models"]] == ["pretrain/1L-32H/checkpoint", "pretrain/2L-64H/checkpoint"]
    for size in ("1L-32H", "2L-64H"):
        assert (out / size / "curves.jsonl").is_file() and (out / "replicas" / "seed-4" / size / "curves.jsonl").is_file()
    first = _final_loss(out / "1L-32H" / "curves.jsonl")
    second = _final_loss(out / "replicas" / "seed-4" / "1L-32H" / "curves.jsonl")
    assert first != second  # another initialisation, data order and masks

    card = build_card(load_report_data(run.root, "seeds")).by_number()
    by_hand = [_final_loss(out / "2L-64H" / "curves.jsonl") - _final_loss(out / "1L-32H" / "curves.jsonl"),
               _final_loss(out / "replicas" / "seed-4" / "2L-64H" / "curves.jsonl")
               - _final_loss(out / "replicas" / "seed-4" / "1L-32H" / "curves.jsonl")]
    c1 = card[1]
    assert c1.seeds == 2 and "2 pretraining seeds" in c1.interval_method
    assert c1.numbers["per_seed_diff"] == pytest.approx(by_hand, abs=1e-6)
    assert c1.estimate == pytest.approx(sum(by_hand) / 2, abs=1e-6)
    # Two seeds: a t-interval with 1 degree of freedom, mean ± 12.706 · |d1 − d2| / 2 (the table's t).
    half = 12.706 * abs(by_hand[0] - by_hand[1]) / 2
    assert c1.interval == pytest.approx((c1.estimate - half, c1.estimate + half), abs=1e-3 * max(half, 1e-6))
    assert card[2].seeds == 2 and "pretraining seeds" in card[2].interval_method
    assert "indicative" not in c1.status_text  # decided or not, it is not from one seed
    assert card[3].seeds == 1  # compression claims: the first seed's models only


def test_one_seed_keeps_the_cache_key_and_folders() -> None:
    stage = PretrainStage()
    plain, one, two = _recipe(), _recipe(seeds=[3]), _recipe(seeds=[3, 4])
    assert "seeds" not in stage.config_payload(plain)["pretrain"]
    assert stage.cache_key(plain, {"data": "x"}) == stage.cache_key(one, {"data": "x"})
    assert stage.cache_key(two, {"data": "x"}) != stage.cache_key(plain, {"data": "x"})
    assert plain.pretrain.replica_seeds() == [] and two.pretrain.replica_seeds() == [4]


def test_seed_and_seeds_must_agree() -> None:
    with pytest.raises(ValueError, match="disagree"):
        _recipe(seeds=[5, 6])  # cfg() sets seed=3
    with pytest.raises(ValueError, match="duplicate"):
        _recipe(seeds=[3, 3])


def test_the_tiny_seeds_recipe_replicates_every_size(tmp_path: Path) -> None:
    import importlib.util
    import shutil

    from tlc_export.recipe import load_recipe

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("tiny_data", root / "scripts" / "tiny_data.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.write_tiny_data(tmp_path / "data")
    shutil.copy(root / "recipes" / "tiny" / "seeds-tiny.yaml", tmp_path / "seeds-tiny.yaml")
    r = load_recipe(tmp_path / "seeds-tiny.yaml")
    assert r.pretrain.seed == 0 and r.pretrain.replica_seeds() == [1]
