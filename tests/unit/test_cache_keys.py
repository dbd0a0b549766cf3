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


def test_integer_zero_point_keys_compress_and_later_while_the_default_keeps_old_keys() -> None:
    """compress.quantize.zero_point changes what compress computes; at its default ("paper") it stays out of the
    key, so run directories made before the field existed stay valid."""
    from tlc_export.recipe import parse_recipe
    from tlc_export.runner import cache_keys

    text = (ROOT / "recipes" / "quickstart.yaml").read_text()
    anchor = "    bits: [8, 6, 4]"
    assert anchor in text
    keys = {zp: cache_keys(parse_recipe(text.replace(anchor, anchor + f"\n    zero_point: {zp}", 1), base_dir=ROOT / "recipes"))
            for zp in ("paper", "integer")}
    base = cache_keys(parse_recipe(text, base_dir=ROOT / "recipes"))
    assert keys["paper"] == base
    order = list(base)
    changed = [s for s in order if keys["integer"][s] != base[s]]
    assert changed == order[order.index("compress"):]
