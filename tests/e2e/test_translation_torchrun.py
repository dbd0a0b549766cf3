"""`torchrun --nproc_per_node 2 -m tlc_export run` trains translation with 2 gloo processes through the runner:
rank 0 reads and encodes, both ranks train on the memory-mapped pairs, rank 0 scores and writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_translation_run import RECIPE, _write_pairs


@pytest.mark.slow
def test_translation_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    _write_pairs(tmp_path / "pairs.tsv")
    one_size = RECIPE.replace(", {layers: 2, hidden: 48, heads: 2, ffn: 96}", "")
    assert one_size != RECIPE
    (tmp_path / "mt.yaml").write_text(one_size)
    env = {**os.environ, "TLC_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "tlc_export", "run", "mt.yaml",
         "--run-dir", str(tmp_path / "run")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["translation"]["status"] == "done"
    out = tmp_path / "run" / "translation"
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["train_pairs"] == res["data"]["splits"]["train"]["pairs"] > 0
    (row,) = res["models"]
    assert row["world_size"] == 2 and row["steps"] > 0 and row["elapsed_s"] >= 1.5
    assert 0 <= row["test_bleu"] <= 100 and row["test_n"] == res["data"]["splits"]["test"]["pairs"]
    steps = [json.loads(line)["step"] for line in (out / "1L-32H" / "curves.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == row["steps"]  # one writer
    header = json.loads((out / "pairs" / "train.json").read_text())
    assert header["format"] == "tlc-pairs" and header["pairs"] == res["train_pairs"]
