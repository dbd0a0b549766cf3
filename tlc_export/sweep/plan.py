"""A recipe with `sweep:` becomes one validated recipe per point.

Every point is the recipe with the sweep's values set at their field paths, validated on its own
like any recipe. A problem caused by a swept value points at that value's line inside `sweep:`
and names the point; a problem every point shares (a base field) is reported once at its own line.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices

from tlc_export.config.common import Section, section_type
from tlc_export.config.sweep import SweepConfig
from tlc_export.errors import RecipeError, RecipeProblem
from tlc_export.recipe import Recipe, load_yaml, missing_file_hint, validate_data

# Fields a sweep may not vary: the run's name and the sweep itself.
_FORBIDDEN = {"name", "sweep"}
_SPEC_KEYS = {"mode", "fields"}


@dataclass(frozen=True)
class SweepPoint:
    """One point: its index, its values (field path → value, in sweep order) and its recipe."""

    index: int
    values: dict[str, Any]
    recipe: Recipe
    id: str  # the sub-run's folder name, e.g. "p01-batch_size=16-fraction=0.5"

    def label(self) -> str:
        """`pretrain.batch_size=16, data.fraction=0.5`."""
        return ", ".join(f"{k}={format_value(v)}" for k, v in self.values.items())


@dataclass
class Sweep:
    """A sweep recipe: the base recipe's text, the combination rule and every validated point."""

    name: str
    mode: str
    fields: dict[str, list[Any]]
    points: list[SweepPoint]
    text: str
    file: str | None
    base_dir: Path
    line: int | None = None  # line of `sweep:` in the file
    config: SweepConfig = field(default_factory=SweepConfig)

    def point(self, k: int) -> SweepPoint:
        if not 0 <= k < len(self.points):
            raise RecipeError(self.file, [RecipeProblem(
                "sweep", f"--point {k}: the sweep has points 0 … {len(self.points) - 1}", self.line,
                hint="`tlc sweep list RECIPE` prints every point with its command")])
        return self.points[k]

    def to_json(self) -> dict[str, Any]:
        """What the parent run directory's sweep.json records."""
        return {"name": self.name, "mode": self.mode, "fields": self.fields,
                "points": [{"index": p.index, "id": p.id, "values": p.values, "label": p.label()} for p in self.points]}


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (dict, list)):
        return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip()
    return str(v)


# --- field paths ---------------------------------------------------------------------------


def _spellings(name: str, f: Any) -> set[str]:
    out = {name}
    if f.alias:
        out.add(f.alias)
    va = f.validation_alias
    if isinstance(va, str):
        out.add(va)
    elif isinstance(va, AliasChoices):
        out.update(c for c in va.choices if isinstance(c, str))
    return out


def path_problem(path: str) -> str | None:
    """Why `path` names no recipe field a sweep can set (None when it does)."""
    parts = path.split(".")
    if any(not p for p in parts) or re.search(r"[\[\]]", path):
        return f"`{path}` is not a field path: write section.field, e.g. pretrain.batch_size (list items cannot be swept one by one)"
    if parts[0] in _FORBIDDEN:
        return f"`{parts[0]}` cannot be swept"
    model: type[Section] = Recipe
    for i, part in enumerate(parts):
        found = None
        names: list[str] = []
        for name, f in model.model_fields.items():
            sp = _spellings(name, f)
            names.extend(sorted(sp))
            if part in sp:
                found = f
        prefix = ".".join(parts[:i])
        if found is None:
            where = f"`{prefix}`" if prefix else "the recipe"
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean `{'.'.join([*parts[:i], close[0]])}`?" if close else ""
            return f"{where} has no field `{part}`{hint}"
        if i < len(parts) - 1:
            sub = section_type(found.annotation)
            if sub is None or "list[" in str(found.annotation):
                return f"`{'.'.join(parts[: i + 1])}` is a value, not a section: a sweep path cannot go inside it"
            model = sub
    return None


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = copy.deepcopy(value)


# --- YAML nodes of the sweep section -------------------------------------------------------------


def _mapping_get(node: yaml.Node | None, key: str) -> tuple[yaml.Node | None, yaml.Node | None]:
    """(key node, value node) of `key` in a mapping node."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return k, v
    return None, None


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


@dataclass
class _Entry:
    path: str
    values: list[Any]
    key_line: int | None
    value_lines: list[int | None]


def _entries(spec: dict[str, Any], node: yaml.Node | None, sweep_line: int | None) -> tuple[str, list[_Entry], list[RecipeProblem]]:
    problems: list[RecipeProblem] = []
    mode = spec.get("mode", "product")
    _, mode_node = _mapping_get(node, "mode")
    if mode not in ("product", "zip"):
        problems.append(RecipeProblem("sweep.mode", f"unknown mode {mode!r}", _line(mode_node) or sweep_line,
                                      hint="use `product` (every combination) or `zip` (the i-th values together)"))
    raw: list[tuple[str, Any, yaml.Node | None, yaml.Node | None]] = []
    for k, v in spec.items():
        k = str(k)
        key_node, val_node = _mapping_get(node, k)
        if k == "fields":
            if not isinstance(v, dict):
                problems.append(RecipeProblem("sweep.fields", "give a mapping of field paths to lists", _line(val_node),
                                              hint="e.g. `pretrain.batch_size: [256, 2048]`"))
                continue
            for fk, fv in v.items():
                fkn, fvn = _mapping_get(val_node, str(fk))
                raw.append((str(fk), fv, fkn, fvn))
        elif k in _SPEC_KEYS:
            continue
        elif "." not in k:
            problems.append(RecipeProblem(f"sweep.{k}", f"unknown key `{k}`", _line(key_node),
                                          hint="sweep keys are `mode` and dotted field paths such as pretrain.batch_size"))
        else:
            raw.append((k, v, key_node, val_node))
    entries = []
    for path, values, key_node, val_node in raw:
        why = path_problem(path)
        if why:
            problems.append(RecipeProblem(f"sweep.{path}", why, _line(key_node),
                                          hint="`tlc recipe-schema` lists every field path"))
            continue
        if not isinstance(values, list) or not values:
            problems.append(RecipeProblem(f"sweep.{path}", "give a non-empty list of values", _line(val_node) or _line(key_node),
                                          hint=f"e.g. `{path}: [a, b]`; a single value belongs in the recipe itself"))
            continue
        items = val_node.value if isinstance(val_node, yaml.SequenceNode) else []
        lines = [_line(items[i]) if i < len(items) else _line(val_node) for i in range(len(values))]
        entries.append(_Entry(path, values, _line(key_node), lines))
    if not raw and not problems:
        problems.append(RecipeProblem("sweep", "the sweep names no field", sweep_line,
                                      hint="add field paths with lists, e.g. `pretrain.batch_size: [256, 2048]`"))
    if mode == "zip" and len({len(e.values) for e in entries}) > 1:
        lengths = ", ".join(f"{e.path} has {len(e.values)}" for e in entries)
        problems.append(RecipeProblem("sweep", f"mode zip needs lists of the same length: {lengths}", sweep_line,
                                      hint="give every list one value per point, or use mode: product"))
    return str(mode), entries, problems


def _combinations(mode: str, entries: list[_Entry]) -> list[list[int]]:
    """Per point, the index into each entry's list."""
    if mode == "zip":
        return [[i] * len(entries) for i in range(len(entries[0].values))]
    return [list(c) for c in itertools.product(*(range(len(e.values)) for e in entries))]


def _related(problem_path: str, swept: str) -> bool:
    """A problem at `problem_path` may come from the value at `swept` (one contains the other)."""
    if not problem_path:
        return False
    return (problem_path == swept or swept.startswith(problem_path + ".")
            or problem_path.startswith(swept + ".") or problem_path.startswith(swept + "["))


def _short_names(paths: list[str]) -> dict[str, str]:
    last = [p.split(".")[-1] for p in paths]
    return {p: (n if last.count(n) == 1 else p) for p, n in zip(paths, last, strict=True)}


def point_id(index: int, values: dict[str, Any]) -> str:
    short = _short_names(list(values))
    body = "-".join(f"{short[k]}={format_value(v)}" for k, v in values.items())
    body = re.sub(r"[^A-Za-z0-9._=+,-]+", "_", body)[:80].strip("_")
    return f"p{index:02d}" + (f"-{body}" if body else "")


def parse_sweep(text: str, data: dict[str, Any], root: yaml.Node | None, file: str | None, base_dir: Path) -> Sweep:
    """Expand and validate every point of a recipe with a `sweep:` section; RecipeError lists every problem."""
    spec = data.get("sweep")
    _, node = _mapping_get(root, "sweep")
    key_node, _ = _mapping_get(root, "sweep")
    sweep_line = _line(key_node)
    if not isinstance(spec, dict):
        raise RecipeError(file, [RecipeProblem("sweep", "`sweep` must be a mapping", sweep_line,
                                               hint="e.g. `sweep: {mode: product, pretrain.batch_size: [256, 2048]}`")])
    mode, entries, problems = _entries(spec, node, sweep_line)
    if problems:
        raise RecipeError(file, problems)
    base = {k: v for k, v in data.items() if k != "sweep"}
    combos = _combinations(mode, entries)
    per_point: list[list[RecipeProblem]] = []
    points: list[SweepPoint] = []
    for k, combo in enumerate(combos):
        d = copy.deepcopy(base)
        values = {e.path: e.values[i] for e, i in zip(entries, combo, strict=True)}
        for path, v in values.items():
            _set(d, path, v)
        recipe, probs = validate_data(d, root, base_dir)
        per_point.append(probs)
        if recipe is not None:
            pid = point_id(k, values)
            recipe.name = f"{recipe.name} · {pid}"
            points.append(SweepPoint(k, values, recipe, pid))

    seen: set[tuple[str, str, int | None]] = set()
    out: list[RecipeProblem] = []

    def add(p: RecipeProblem) -> None:
        key = (p.path, p.message, p.line)
        if key not in seen:
            seen.add(key)
            out.append(p)

    everywhere = set.intersection(*({(p.path, p.message) for p in probs} for probs in per_point)) if per_point else set()
    for k, (combo, probs) in enumerate(zip(combos, per_point, strict=True)):
        label = ", ".join(f"{e.path}={format_value(e.values[i])}" for e, i in zip(entries, combo, strict=True))
        for p in probs:
            rel = [(e, i) for e, i in zip(entries, combo, strict=True) if _related(p.path, e.path)]
            if rel:
                e, i = rel[-1]
                add(RecipeProblem(p.path, f"{p.message} (sweep point {k}: {label})", e.value_lines[i], None,
                                  p.hint or f"change this value in `sweep.{e.path}`"))
            elif (p.path, p.message) in everywhere:
                add(p)  # a base problem: every point has it
            else:
                add(RecipeProblem(p.path or "sweep", f"{p.message} (sweep point {k}: {label})", sweep_line, None,
                                  p.hint or "this combination of the sweep's values is invalid; change a value or the mode"))
    if out:
        raise RecipeError(file, out)
    name = str(data.get("name") or "experiment")
    cfg = SweepConfig.model_validate({"mode": mode, "fields": {e.path: e.values for e in entries}})
    return Sweep(name=name, mode=mode, fields={e.path: e.values for e in entries}, points=points, text=text,
                 file=file, base_dir=base_dir, line=sweep_line, config=cfg)


def parse_plan(text: str, file: str | None = None, base_dir: Path | None = None) -> Recipe | Sweep:
    """A recipe, or, when it has a `sweep:` section, the sweep with every point validated."""
    root, data = load_yaml(text, file)
    if data.get("sweep") is not None:
        return parse_sweep(text, data, root, file, base_dir or Path("."))
    recipe, problems = validate_data(data, root, base_dir)
    if problems:
        raise RecipeError(file, problems)
    assert recipe is not None
    return recipe


def parse_point(text: str, point: int, file: str | None = None, base_dir: Path | None = None) -> Recipe:
    """The recipe of point `point` of a sweep recipe."""
    plan = parse_plan(text, file, base_dir)
    if not isinstance(plan, Sweep):
        raise RecipeError(file, [RecipeProblem(path="", message=f"--point {point}: this recipe has no `sweep:` section",
                                               line=1, hint="drop --point, or add a `sweep:` section")])
    return plan.point(point).recipe


def load_plan(path: str | Path) -> Recipe | Sweep:
    """Read a recipe file: one recipe, or a sweep with every point validated."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(str(path), [RecipeProblem("", "file not found",
                                                    hint=missing_file_hint(path, "check the path to the recipe YAML"))])
    return parse_plan(path.read_text(encoding="utf-8"), file=str(path), base_dir=path.resolve().parent)
