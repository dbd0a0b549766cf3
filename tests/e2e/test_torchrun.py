"""`torchrun --nproc_per_node 2 -m tlc_export run` pretrains with 2 gloo processes through the runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_tiny_run import RECIPE, _write_data


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    _write_data(tmp_path)
    # Data and pretraining only: the ranks walk those stages together, rank 0 writes.
    recipe_text = RECIPE.split("finetune:")[0].replace("time_budget_s: 2", "time_budget_s: 3")
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(recipe_text)
    env = {**os.environ, "TLC_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "tlc_export", "run", str(recipe),
         "--run-dir", str(tmp_path / "run")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["pretrain"]["status"] == "done"
    results = json.loads((tmp_path / "run" / "pretrain" / "results.json").read_text())
    assert results["world_size"] == 2
    for row in results["models"]:
        # The loop stops at the first step end at or past the budget (the upper end is the machine's speed).
        assert row["steps"] > 0 and row["elapsed_s"] >= 3.0
        curve = (tmp_path / "run" / "pretrain" / row["model"] / "curves.jsonl").read_text().splitlines()
        steps = [json.loads(line)["step"] for line in curve]
        assert steps == sorted(set(steps))  # one writer: no duplicated points
        assert (tmp_path / "run" / "pretrain" / row["model"] / "checkpoint" / "config.json").exists()
