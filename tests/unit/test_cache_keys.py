"""Every recipe's `{stage: cache_key}` map is pinned: a change to it invalidates existing run directories.

When a change is meant to alter keys (a recipe edited, a section added), regenerate the file with
`python scripts/cache_keys.py > tests/unit/cache_keys.json` and say why in the commit.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("cache_keys_script", ROOT / "scripts" / "cache_keys.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_recipe_keeps_its_cache_keys() -> None:
    pinned = json.loads((Path(__file__).parent / "cache_keys.json").read_text())
    now = _script().recipe_keys(ROOT / "recipes")
    assert set(now) == set(pinned)
    for recipe, keys in pinned.items():
        assert now[recipe] == keys, recipe


def test_a_changed_section_changes_its_stage_and_every_later_one() -> None:
    from tlc_export.recipe import parse_recipe
    from tlc_export.runner import cache_keys

    text = (ROOT / "recipes" / "quickstart.yaml").read_text()
    assert "\n  lr: 1.0e-3\n" in text
    base = cache_keys(parse_recipe(text, base_dir=ROOT / "recipes"))
    changed = cache_keys(parse_recipe(text.replace("\n  lr: 1.0e-3\n", "\n  lr: 2.0e-3\n", 1),
                                      base_dir=ROOT / "recipes"))
    assert list(base) == list(changed)
    assert base["data"] == changed["data"]
    assert all(base[s] != changed[s] for s in base if s != "data")


def test_zero_point_integer_is_the_default_and_paper_keeps_the_keys_of_runs_made_before_the_field() -> None:
    """compress.quantize.zero_point changes what compress computes. `paper` (every grid before the field existed)
    stays out of the key, so those run directories stay valid; the default, `integer`, keys compress and every
    later stage; a symmetric grid has no zero point, so the field never reaches its key."""
    from tlc_export.recipe import parse_recipe
    from tlc_export.runner import cache_keys

    text = (ROOT / "recipes" / "quickstart.yaml").read_text()
    anchor = "    bits: [8, 6, 4]"
    assert anchor in text and "zero_point" not in text

    def keys(extra: str) -> dict[str, str]:
        return cache_keys(parse_recipe(text.replace(anchor, anchor + extra, 1), base_dir=ROOT / "recipes"))

    base, paper, integer = keys(""), keys("\n    zero_point: paper"), keys("\n    zero_point: integer")
    assert integer == base
    order = list(base)
    assert [s for s in order if paper[s] != base[s]] == order[order.index("compress"):]
    # a paper-grid quickstart keeps the keys every quickstart had before the field existed (pinned then)
    assert paper == BEFORE_ZERO_POINT
    symmetric = keys("\n    symmetric: true")
    assert keys("\n    symmetric: true\n    zero_point: paper") == symmetric


# quickstart.yaml's keys when every grid was the paper's (tests/unit/cache_keys.json before `zero_point` existed)
BEFORE_ZERO_POINT = {"data": "d0b7b4632b9c0a03a968", "pretrain": "fe884b83a22e4503cb31", "finetune": "165057a796d78febf4af",
                     "compress": "9b8d47c66a387cf834c3", "export": "65273856445b6f8e1c08", "bench": "1d37b62fcc21637e3712",
                     "report": "be196ee12c073bc64f1b"}
