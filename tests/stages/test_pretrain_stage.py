"""The pretrain stage end to end on two tiny sizes: results.json, figures, relative output paths."""

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
from tlc_export.rundir import RunDir
from tlc_export.stages.base import StageContext
from tlc_export.tasks.classification.stages.pretrain import PretrainStage


def test_stage_trains_every_size_and_writes_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    step_clock(monkeypatch, dt=1 / 32)
    run = RunDir(tmp_path / "run")
    data = run.stage_dir("data")
    make_tokenizer(data / "tokenizer")
    for split, ids in (("train", make_ids(20_000)), ("val", make_ids(2_000, seed=1))):
        docs = split_docs(ids)
        write_token_split(data / "tokens", split, docs, [0] * len(docs), ["counting"], data / "tokenizer")
    sizes = [ModelSize(layers=1, hidden=32, heads=2), ModelSize(layers=2, hidden=64, heads=2)]
    recipe = Recipe(models=ModelsConfig(sizes=sizes, dropout=0.0), pretrain=cfg(time_budget_s=1.0),
                    data=DataConfig(max_seq_len=32))
    out = run.stage_dir("pretrain")
    out.mkdir(parents=True)
    outputs = PretrainStage().run(StageContext(recipe, run, out, {}, console=Console(quiet=True)))

    results = json.loads((out / "results.json").read_text())
    names = [r["model"] for r in results["models"]]
    assert names == ["1L-32H", "2L-64H"]
    for r in results["models"]:
        assert r["elapsed_s"] == 1.0 and r["steps"] == 32 and r["final_val_ppl"] > 1
        assert (run.root / r["checkpoint"] / "model.safetensors").exists()
    # Token files are read as they are: 20,000 ids pack into 20,000 // 30 rows of 32.
    assert results["train_rows"] == 20_000 // 30 and results["train_tokens"] == 20_000 // 30 * 30
    assert results["validation_sample"]["rows"] == min(2_000 // 30, 2 * 16)
    assert results["validation_sample"]["rows_per_source"] == {"counting": results["validation_sample"]["rows"]}
    big, small = results["models"][1], results["models"][0]
    assert big["params"] > small["params"]
    for key in ("results", "curves_wallclock", "curves_steps"):
        path = run.root / outputs[key]
        assert not Path(outputs[key]).is_absolute() and path.stat().st_size > 1000
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
