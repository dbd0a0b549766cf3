"""Task families: how a recipe picks one, the translation section's validation, and classification as a
thin adapter over the code that predates families."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tlc_export.errors import RecipeError, StageError
from tlc_export.predictions import SplitPredictions
from tlc_export.recipe import parse_recipe, schema_lines
from tlc_export.scoring import accuracy_fields
from tlc_export.tasks import family_of, get_family
from tlc_export.tasks.classification.family import ClassificationFamily
from tlc_export.tasks.translation.family import TranslationFamily

CLS = "models: {sizes: [{layers: 1, hidden: 32}]}\npretrain: {time_budget_s: 1}\n"
MT = """\
name: mt
translation:
  source_lang: en
  target_lang: fr
  depth: [1, 2]
  width: [32, 64]
  train: {time_budget_s: 5, batch_tokens: 512}
  decoding: {strategy: greedy}
"""


def _problems(text: str) -> dict[str, object]:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, file="r.yaml")
    return {p.path: p for p in info.value.problems}


def test_recipe_picks_its_family():
    assert isinstance(family_of(parse_recipe(CLS)), ClassificationFamily)  # pretraining only
    assert isinstance(family_of(parse_recipe(CLS + "finetune: {}\n")), ClassificationFamily)
    recipe = parse_recipe(MT)
    assert isinstance(family_of(recipe), TranslationFamily)
    assert [s.name for s in recipe.translation.grid()] == ["1L-32H", "2L-32H", "1L-64H", "2L-64H"]
    assert get_family("translation").metric.field == "bleu"
    with pytest.raises(KeyError, match="known: classification, translation"):
        get_family("summarization")


def test_translation_recipe_problems_at_their_lines():
    text = MT.replace("train: {time_budget_s: 5, batch_tokens: 512}",
                      "train: {time_budget_s: 5, batch_tokens: 512, label_smooth: 0.1}")
    text += "models: {sizes: [{layers: 1, hidden: 32}]}\ncompress: {}\nexport: {formats: [onnx-fp32, tensorrt-int8]}\n"
    text = text.replace("  depth: [1, 2]\n", "  depth: [1, 2]\n  data: {dev_books: [41, 43], test_books: [43, 67]}\n")
    problems = _problems(text)
    assert set(problems) == {"models", "export.formats", "translation.train.label_smooth", "translation.data.test_books"}
    assert problems["models"].line == 10 and "translation" in problems["models"].hint
    # compress takes translation models; TensorRT files of them are not made, and the line says so
    assert problems["export.formats"].line == 12 and "tensorrt-int8" in problems["export.formats"].message
    assert problems["translation.train.label_smooth"].line == 8
    assert "66" in problems["translation.data.test_books"].message


def test_translation_recipe_semantic_checks():
    assert "both" in str(_problems(MT.replace("target_lang: fr", "target_lang: en"))["translation"].message)
    bible_de = _problems(MT.replace("target_lang: fr", "target_lang: de"))["translation"]
    assert "Louis Segond" in bible_de.message
    overlap = MT.replace("  depth: [1, 2]\n", "  depth: [1, 2]\n  data: {dev_books: [41], test_books: [41]}\n")
    assert "both dev_books and test_books" in _problems(overlap)["translation.data"].message
    assert "size grid is empty" in _problems(MT.replace("  width: [32, 64]\n", ""))["translation"].message


def test_classification_recipe_still_needs_models_and_pretrain():
    problems = _problems("name: x\nfinetune: {}\n")
    assert {"models", "pretrain"} <= set(problems)
    assert problems["models"].message == "Field required"


def test_every_translation_field_is_documented():
    rows = [r for r in schema_lines() if r[0].startswith("translation")]
    assert len(rows) > 40
    assert [r[0] for r in rows if not r[3].strip()] == []


def test_stages_belong_to_their_family():
    from tlc_export.runner import stages_of

    mt = [s.name for s in stages_of(family_of(parse_recipe(MT)), parse_recipe(MT))]
    cls_recipe = parse_recipe(CLS + "finetune: {}\n")
    cls = [s.name for s in stages_of(family_of(cls_recipe), cls_recipe)]
    assert mt == ["translation"]
    assert cls == ["data", "pretrain", "finetune"]


def test_classification_family_is_the_existing_task_code(tmp_path: Path):
    from tlc_export.data.task import load_task

    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([(f"review number {i}", "pos" if i % 3 else "neg") for i in range(200)])
    recipe = parse_recipe(CLS + "finetune: {task: {kind: csv, path: t.csv}}\n", base_dir=tmp_path)
    family = family_of(recipe)
    data = family.read(recipe)
    task = load_task(recipe.finetune.task, recipe)
    assert (data.train, data.dev, data.test) == (task.train, task.dev, task.test)
    assert data.num_labels == 2 and data.label_names == ["neg", "pos"]
    assert data.info["examples"] == task.counts()
    rng = np.random.default_rng(0)
    preds = {s: SplitPredictions(rng.integers(0, 2, 50), rng.integers(0, 2, 50)) for s in ("dev", "test")}
    assert family.row_fields(preds) == accuracy_fields(preds)
    with pytest.raises(StageError, match="pretrained checkpoint"):
        family.build_model(recipe)


def test_data_prepare_reads_a_translation_recipes_pairs(tmp_path: Path):
    rows = ["en\tfr"] + [f"sentence {i}\tphrase {i}" for i in range(200)]
    (tmp_path / "p.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    recipe = parse_recipe(MT.replace("  depth: [1, 2]\n", "  depth: [1, 2]\n  data: {kind: tsv, path: p.tsv}\n"),
                          base_dir=tmp_path)
    info = family_of(recipe).prepare_data(recipe)
    line = info["translation.data (tsv)"]
    assert "train" in line and "stable hash of the source sentence" in line
    assert not [k for k in info if k.startswith("data.sources")]  # no pretraining corpus fetched


def test_translate_uses_the_dev_choice():
    from tlc_export.tasks.translation.serve import choose_model

    rows = [{"model": "1L-32H", "dev_bleu": 4.0, "test_bleu": 9.0}, {"model": "2L-64H", "dev_bleu": 5.0, "test_bleu": 1.0},
            {"model": "3L-64H", "dev_bleu": 5.0, "test_bleu": 7.0}]
    assert choose_model(rows)["model"] == "2L-64H"  # best dev (ties: the earlier, smaller); test is not consulted
    assert choose_model(rows, "1L-32H")["model"] == "1L-32H"
    with pytest.raises(StageError, match="no size '9L-9H'.*1L-32H, 2L-64H, 3L-64H"):
        choose_model(rows, "9L-9H")


def test_resolved_translation_recipe_parses_again():
    recipe = parse_recipe(MT)
    again = parse_recipe(recipe.resolved_yaml())
    assert again.translation.model_dump() == recipe.translation.model_dump() and again.models is None
    cls = parse_recipe(CLS + "finetune: {}\n")
    assert parse_recipe(cls.resolved_yaml()).data.model_dump() == cls.data.model_dump()
