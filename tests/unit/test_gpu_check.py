"""The one-call GPU check: lean imports, one JSON line per check and a summary, also without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from runtime_bench import gpu_check


def test_import_needs_only_the_standard_library() -> None:
    code = "import sys, runtime_bench.gpu_check; print(sorted(m for m in ('torch', 'pydantic', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_checks_write_one_line_each_and_a_summary(tmp_path: Path) -> None:
    rc = gpu_check.main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                         "--only", "environment,tensorrt,pytest_gpu", "--budget-s", "10"])
    lines = [json.loads(x) for x in (tmp_path / "out" / "checks.jsonl").read_text().splitlines()]
    assert [r["check"] for r in lines] == ["environment", "tensorrt", "pytest_gpu"]
    assert {"status", "seconds", "error", "figures"} <= set(lines[0])
    env = lines[0]["figures"]
    assert env["torch"] and env["pydantic"] and env["cuda_available"] == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert lines[0]["status"] == "unavailable" and "CUDA" in lines[0]["error"]
    assert lines[2]["status"] == "skipped" and "budget" in lines[2]["error"]  # 30 s needed, 10 s given
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["checks"]["tensorrt"] == lines[1]["status"] and summary["environment"] == env
    assert rc == (0 if summary["ok"] else 1)


def test_translation_check_is_registered_and_unavailable_without_cuda(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        import pytest

        pytest.skip("a CUDA machine runs the check itself (runtime_bench.gpu_check --only translation)")
    gpu_check.main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--only", "translation"])
    (line,) = [json.loads(x) for x in (tmp_path / "out" / "checks.jsonl").read_text().splitlines()]
    assert line["check"] == "translation" and line["status"] == "unavailable" and "CUDA" in line["error"]
