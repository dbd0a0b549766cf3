"""The standing mutation check (`make mutants`): plant each curated bug, run the tests that cover it.

Every mutant in `scripts/mutants.toml` is one plausible single-line bug in a core function. A mutant
names its target by *what* it is, not where it lives: the function (or module-level constant) and the
exact source line inside it, searched across the whole package. Files may move between folders (task
families, shared machinery); the check follows them. A target that is no longer found, or found twice,
fails loudly ("mutant target not found") instead of passing silently; so do test files that cannot be
found. Tests are named by file basename (`test_prune.py::test_x`), also searched wherever they live.

For each mutant the repository is copied to a scratch folder, the line is replaced there, and pytest
runs only the named tests (`-x`: the first failure is enough). A mutant the tests do not catch
"survived" and the command exits 1. Before the mutants, the same tests run unmutated once (the
baseline): a failing baseline would make every mutant look caught, so it stops the check.

    python scripts/mutants.py                 # everything, the table at the end
    python scripts/mutants.py --only prune-count-one-fewer --only fp16-tolerance
    python scripts/mutants.py --list          # where every target is, without running
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
LIST = Path(__file__).with_name("mutants.toml")
PACKAGES = ("tlc_export", "runtime_bench")
# What a test run may read besides the package and the tests (recipes, docs checked by tests, ...).
IGNORED = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
                                 "*.egg-info", "build", ".whl", ".gl", ".tlc-home")
TIMEOUT_S = 300


class MutantError(Exception):
    """The mutant list no longer matches the code (a target or a test file is gone or ambiguous)."""


@dataclass(frozen=True)
class Mutant:
    id: str
    function: str  # function, method or module-level constant that holds the line
    line: str  # the exact source line (stripped), as it reads today
    mutant: str  # what replaces it (same indentation)
    tests: tuple[str, ...]  # "test_file.py" or "test_file.py::test_name", searched under tests/
    bug: str  # what the bug does, for the table


@dataclass(frozen=True)
class Target:
    path: Path  # relative to the repository root
    lineno: int  # 1-based


def load(path: Path = LIST) -> list[Mutant]:
    data = tomllib.loads(path.read_text())
    out = []
    for i, m in enumerate(data.get("mutant", [])):
        missing = {"id", "function", "line", "mutant", "tests", "bug"} - set(m)
        if missing:
            raise MutantError(f"{path.name}: mutant #{i + 1} ({m.get('id', '?')}) lacks {sorted(missing)}")
        if m["line"].strip() == m["mutant"].strip():
            raise MutantError(f"{path.name}: mutant {m['id']} does not change its line")
        out.append(Mutant(m["id"], m["function"], m["line"].strip(), m["mutant"].strip(), tuple(m["tests"]), m["bug"]))
    ids = [m.id for m in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise MutantError(f"{path.name}: duplicate mutant ids {dupes}")
    return out


def _named_spans(tree: ast.AST, name: str) -> Iterable[tuple[int, int]]:
    """Line spans of the functions, classes and assigned names called `name` inside `tree`."""
    want = name.split(".")[-1]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == want:
            yield node.lineno, node.end_lineno or node.lineno
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == want for t in targets):
                yield node.lineno, node.end_lineno or node.lineno


def locate(m: Mutant, root: Path = ROOT) -> Target:
    """The one source line `m` mutates; MutantError when it is not found or not unique."""
    hits: list[Target] = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            text = path.read_text()
            if m.line not in text:
                continue
            lines = text.splitlines()
            tree = ast.parse(text)
            if "." in m.function:  # Class.method: only that class's methods
                cls = m.function.split(".")[0]
                spans = [span for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == cls
                         for span in _named_spans(node, m.function)]
            else:
                spans = list(_named_spans(tree, m.function))
            for a, b in spans:
                for i in range(a, b + 1):
                    if lines[i - 1].strip() == m.line:
                        hits.append(Target(path.relative_to(root), i))
    hits = sorted(set(hits), key=lambda t: (str(t.path), t.lineno))
    if not hits:
        raise MutantError(f"mutant target not found: {m.id}: no line `{m.line}` inside `{m.function}` in "
                          f"{', '.join(PACKAGES)}; the code changed: update scripts/mutants.toml")
    if len(hits) > 1:
        where = ", ".join(f"{t.path}:{t.lineno}" for t in hits)
        raise MutantError(f"mutant target ambiguous: {m.id}: `{m.line}` inside `{m.function}` at {where}")
    return hits[0]


def test_paths(m: Mutant, root: Path = ROOT) -> list[str]:
    """pytest node ids for `m.tests`, each file found by its basename anywhere under tests/."""
    out = []
    for spec in m.tests:
        file, _, node = spec.partition("::")
        found = sorted(p.relative_to(root) for p in (root / "tests").rglob(file))
        if len(found) != 1:
            raise MutantError(f"mutant tests not found: {m.id}: {file} matches {[str(p) for p in found]} under tests/; "
                              "update scripts/mutants.toml")
        out.append(str(found[0]) + (f"::{node}" if node else ""))
    return out


def mutate(source: str, lineno: int, m: Mutant) -> str:
    lines = source.splitlines(keepends=True)
    old = lines[lineno - 1]
    indent = old[: len(old) - len(old.lstrip())]
    lines[lineno - 1] = indent + m.mutant + "\n"
    new = "".join(lines)
    ast.parse(new)  # a mutant must still be valid Python: a syntax error is not a bug the tests catch
    return new


def _pytest(work: Path, nodes: list[str], timeout: float) -> tuple[str, float, str]:
    """("passed" | "failed" | "timeout" | "error: ...", seconds, output tail)."""
    env = dict(os.environ, PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *nodes]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0, ""
    dt = time.monotonic() - t0
    tail = (r.stdout + r.stderr)[-3000:]
    status = {0: "passed", 1: "failed"}.get(r.returncode, f"error: pytest exit {r.returncode}")
    return status, dt, tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[], help="run only these mutant ids (repeatable)")
    ap.add_argument("--list", action="store_true", help="locate every target and its tests, run nothing")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the selected tests")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per mutant (a hang counts as caught)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print pytest's output for each mutant")
    args = ap.parse_args(argv)

    mutants = load()
    if args.only:
        unknown = sorted(set(args.only) - {m.id for m in mutants})
        if unknown:
            print(f"unknown mutant ids {unknown}; known: {[m.id for m in mutants]}", file=sys.stderr)
            return 2
        mutants = [m for m in mutants if m.id in args.only]
    problems, plan = [], []
    for m in mutants:
        try:
            plan.append((m, locate(m), test_paths(m)))
        except MutantError as e:
            problems.append(str(e))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    if args.list:
        for m, t, nodes in plan:
            print(f"{m.id:28s} {t.path}:{t.lineno}  {m.function}  ->  {' '.join(nodes)}")
        return 0

    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tlc-mutants-") as tmp:
        work = Path(tmp) / "repo"
        shutil.copytree(ROOT, work, ignore=IGNORED)
        if not args.no_baseline:
            nodes = sorted({n for _, _, ns in plan for n in ns})
            status, dt, tail = _pytest(work, nodes, args.timeout * 2)
            print(f"baseline (unmutated, {len(nodes)} test selections): {status} in {dt:.0f} s", flush=True)
            if status != "passed":
                print(tail, file=sys.stderr)
                print("the baseline fails: fix the tests first (every mutant would look caught)", file=sys.stderr)
                return 2
        rows = []
        for m, t, nodes in plan:
            original = (work / t.path).read_text()
            (work / t.path).write_text(mutate(original, t.lineno, m))
            try:
                status, dt, tail = _pytest(work, nodes, args.timeout)
            finally:
                (work / t.path).write_text(original)
            result = {"failed": "caught", "timeout": "caught (timeout)", "passed": "SURVIVED"}.get(status, status)
            rows.append((m, t, result, dt))
            print(f"  {m.id}: {result} ({dt:.0f} s)", flush=True)
            if args.verbose or result.startswith("error"):
                print(tail)

    print()
    print("| mutant | where | bug | tests | result | s |")
    print("|---|---|---|---|---|---|")
    for m, t, result, dt in rows:
        tests = ", ".join(m.tests)
        print(f"| {m.id} | `{m.function}` {t.path}:{t.lineno} | {m.bug} | {tests} | {result} | {dt:.0f} |")
    bad = [m.id for m, _, r, _ in rows if not r.startswith("caught")]
    total = time.monotonic() - t_all
    print(f"\n{len(rows) - len(bad)}/{len(rows)} mutants caught in {total:.0f} s"
          f" on {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})")
    if bad:
        print(f"not caught: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
