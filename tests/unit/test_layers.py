"""The package's import structure: layers that only point down, no cycles, no private names across modules.

Every import counts: module level, inside functions and under `TYPE_CHECKING` (an import hidden in a
function still ties the two modules together). The layers are docs/ARCHITECTURE.md's, lowest first; a
module belongs to the layer of the longest prefix listed. A module may import its own layer or a lower
one, and the task families (`tlc_export.tasks.<family>`) never import each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tlc_export", "runtime_bench")

# Lowest first. Every module of PACKAGES falls under one prefix (checked below).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("tlc_export", "tlc_export.errors", "tlc_export.atomic", "tlc_export.stats",
                    "tlc_export.distributed", "tlc_export.config")),
    # The row and task readers and the built-in data fetchers: recipe validation checks local files with them.
    ("readers", ("tlc_export.rows", "tlc_export.data.local", "tlc_export.data.hf", "tlc_export.data.fetch",
                 "tlc_export.data.brown", "tlc_export.data.brown_genre", "tlc_export.data.rt_polarity",
                 "tlc_export.data.task")),
    ("recipe", ("tlc_export.recipe", "tlc_export.sweep.plan")),
    ("records", ("tlc_export.rundir", "tlc_export.store", "tlc_export.predictions", "tlc_export.scoring",
                 "tlc_export.models", "tlc_export.tokens", "tlc_export.tasks.base")),
    ("mechanisms", ("tlc_export.data", "tlc_export.train", "tlc_export.pretrain", "tlc_export.finetune",
                    "tlc_export.compress", "tlc_export.export", "runtime_bench")),
    ("kits", ("tlc_export.report", "tlc_export.package", "tlc_export.serving")),
    ("stages", ("tlc_export.stages",)),
    ("families", ("tlc_export.tasks.classification", "tlc_export.tasks.translation")),
    ("registry", ("tlc_export.tasks", "tlc_export.runner", "tlc_export.sweep", "tlc_export.verify")),
    ("programs", ("tlc_export.cli", "tlc_export.__main__", "tlc_export.plan", "runtime_bench.__main__", "runtime_bench.data_throughput",
                  "runtime_bench.gpu_check", "runtime_bench.ort_quant_speed", "runtime_bench.pretrain_throughput",
                  "runtime_bench.serving_bundle", "runtime_bench.translation")),
]
FAMILIES = "tlc_export.tasks."


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the longest module of PACKAGES the name resolves to)
    names: tuple[str, ...]  # names taken from it (empty for `import x`)
    line: int


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def imports(mods: dict[str, Path]) -> Iterator[Import]:
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    target = resolve(a.name)
                    if target and target != mod:
                        yield Import(mod, target, (), node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                for a in node.names:
                    sub = resolve(f"{prefix}.{a.name}")
                    if sub is not None and sub != resolve(prefix) and sub != mod:
                        yield Import(mod, sub, (), node.lineno)  # `from pkg import module`
                    else:
                        target = resolve(prefix)
                        if target and target != mod:
                            yield Import(mod, target, (a.name,), node.lineno)


def layer_of(mod: str) -> int:
    best, layer = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best:
                best, layer = len(p), i
    return layer


def family_of_module(mod: str) -> str | None:
    if not mod.startswith(FAMILIES):
        return None
    rest = mod[len(FAMILIES):].split(".")[0]
    return rest if layer_of(FAMILIES + rest) == _index("families") else None


def _index(name: str) -> int:
    return [n for n, _ in LAYERS].index(name)


def cycles(mods: dict[str, Path], edges: list[Import]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for e in edges:
        graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # iterative enough for ~200 modules
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def problems(root: Path = ROOT) -> list[str]:
    mods = modules(root)
    edges = list(imports(mods))
    out = [f"{m}: in no layer (add its prefix to LAYERS)" for m in mods if layer_of(m) < 0]
    for e in edges:
        a, b = layer_of(e.source), layer_of(e.target)
        where = f"{mods[e.source].relative_to(root)}:{e.line}"
        if b > a:
            out.append(f"{where}: {e.source} ({LAYERS[a][0]}) imports {e.target} ({LAYERS[b][0]}), a higher layer")
        fa, fb = family_of_module(e.source), family_of_module(e.target)
        if fa and fb and fa != fb:
            out.append(f"{where}: family {fa} imports family {fb}")
        for n in e.names:
            if n.startswith("_") and not n.startswith("__"):
                out.append(f"{where}: {e.source} imports the private name {n} from {e.target}")
    out += [f"import cycle: {' → '.join(c)}" for c in cycles(mods, edges)]
    return out


def test_imports_only_point_down_without_cycles_or_private_names() -> None:
    found = problems()
    assert not found, "\n".join(found)


def test_the_checker_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    """A cycle closed inside a function, an upward import under TYPE_CHECKING and a private name are all found."""
    pkg = tmp_path / "tlc_export"
    (pkg / "stages").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stages" / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from tlc_export.atomic import write\n")
    (pkg / "atomic.py").write_text("from tlc_export.errors import _hidden\n")
    (pkg / "recipe.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                   "    from tlc_export.stages.base import Stage\n")
    (pkg / "stages" / "base.py").write_text("")
    (tmp_path / "runtime_bench").mkdir()
    (tmp_path / "runtime_bench" / "__init__.py").write_text("")
    found = "\n".join(problems(tmp_path))
    assert "import cycle: tlc_export.atomic → tlc_export.errors" in found
    assert "tlc_export.recipe (recipe) imports tlc_export.stages.base (stages)" in found
    assert "private name _hidden" in found


def test_families_never_import_each_other(tmp_path: Path) -> None:
    pkg = tmp_path / "tlc_export"
    for d in ("", "tasks", "tasks/classification", "tasks/translation"):
        (pkg / d).mkdir(parents=True, exist_ok=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "tasks" / "translation" / "family.py").write_text(
        "def f():\n    from tlc_export.tasks.classification import family\n")
    (pkg / "tasks" / "classification" / "family.py").write_text("")
    (tmp_path / "runtime_bench").mkdir()
    (tmp_path / "runtime_bench" / "__init__.py").write_text("")
    assert any("family translation imports family classification" in p for p in problems(tmp_path))
