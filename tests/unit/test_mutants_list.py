"""The standing mutation check's list stays in step with the code (cheap: nothing is run).

`make mutants` runs outside `make test`; this test makes a moved or rewritten target show up in every test
run instead: each mutant's line must be found exactly once, inside its function, wherever the file lives,
and its test files must exist.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mutants():
    spec = importlib.util.spec_from_file_location("tlc_mutants", ROOT / "scripts" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_every_target_and_test_file_is_found(mutants) -> None:
    listed = mutants.load()
    assert len(listed) >= 15
    for m in listed:
        target = mutants.locate(m, ROOT)
        source = (ROOT / target.path).read_text()
        assert source.splitlines()[target.lineno - 1].strip() == m.line
        changed = mutants.mutate(source, target.lineno, m)
        assert changed != source and changed.splitlines()[target.lineno - 1].strip() == m.mutant
        assert mutants.test_paths(m, ROOT)


def test_a_target_that_moved_away_fails_loudly(mutants, tmp_path: Path) -> None:
    (tmp_path / "tlc_export" / "family").mkdir(parents=True)
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tlc_export" / "family" / "moved.py").write_text("def f(x):\n    return x + 1\n\n\ndef g(x):\n    return x + 1\n")
    (tmp_path / "tests" / "unit" / "test_f.py").write_text("")
    m = mutants.Mutant("m", "f", "return x + 1", "return x + 2", ("test_f.py",), "off by one")
    found = mutants.locate(m, tmp_path)  # found in its new folder, inside f only (g has the same line)
    assert (found.path, found.lineno) == (Path("tlc_export/family/moved.py"), 2)
    assert mutants.test_paths(m, tmp_path) == ["tests/unit/test_f.py"]
    with pytest.raises(mutants.MutantError, match="mutant target not found"):
        mutants.locate(mutants.Mutant("m", "h", "return x + 1", "return x + 2", ("test_f.py",), "-"), tmp_path)
    with pytest.raises(mutants.MutantError, match="mutant target not found"):
        mutants.locate(mutants.Mutant("m", "f", "return x - 1", "return x + 2", ("test_f.py",), "-"), tmp_path)
    with pytest.raises(mutants.MutantError, match="mutant tests not found"):
        mutants.test_paths(mutants.Mutant("m", "f", "return x + 1", "return x + 2", ("test_gone.py",), "-"), tmp_path)
