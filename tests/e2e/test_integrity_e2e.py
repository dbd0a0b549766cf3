"""Fault injection on copies of the tiny end-to-end run: each damaged file is caught by the command that reads it
and by `tlc verify`; `--force pretrain` retrains every size from step 0; a second `tlc run` on a run directory in
use refuses, and a run killed with SIGKILL resumes.

The byte flips and checks are done here with plain file I/O and `hashlib`, not with the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_recipe import RECIPE, _write_data

from tlc_export.cli import main

pytestmark = pytest.mark.slow


def _copy(tiny_run, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, dst, symlinks=True)
    return dst


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _invoke(tiny_run, *args: str):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLC_HOME", str(tiny_run.home))
        return CliRunner().invoke(main, list(args))


def _text(result) -> str:
    return " ".join(result.output.split())


def test_verify_passes_on_the_fresh_run(tiny_run) -> None:
    assert tiny_run.exit_code == 0, tiny_run.output
    result = _invoke(tiny_run, "verify", str(tiny_run.run_dir))
    assert result.exit_code == 0, result.output
    for stage in ("data", "pretrain", "finetune", "compress", "export", "bench", "report"):
        assert stage in result.output
    assert "every recorded file matches" in _text(result)


# (damaged file, the stage that wrote it, the stage command that reads it)
FAULTS = [
    ("data/tokens/train.bin", "data", "pretrain"),
    ("pretrain/2L-64H/checkpoint/model.safetensors", "pretrain", "finetune"),
    ("compress/2L-64H/variants/2L-64H.s00.b8.safetensors", "compress", "export"),
    ("export/2L-64H/2L-64H.s00.b8/onnx-int8.onnx", "export", "bench"),
]


@pytest.mark.parametrize(("rel", "writer", "reader"), FAULTS, ids=[f[2] for f in FAULTS])
def test_a_flipped_byte_is_caught_where_it_is_read_and_by_verify(tiny_run, tmp_path: Path, rel: str, writer: str,
                                                                 reader: str) -> None:
    run = _copy(tiny_run, tmp_path)
    _flip(run / rel)
    before = _snapshot(run / reader)
    manifest = (run / "manifest.json").read_text()
    result = _invoke(tiny_run, reader, str(run), "--force")
    assert result.exit_code != 0
    text = _text(result)
    assert str(run / rel) in text and "SHA-256 differs" in text
    assert f"the `{writer}` stage wrote" in text and f"--force {writer}" in text
    assert _snapshot(run / reader) == before  # nothing of the reader was written …
    assert (run / "manifest.json").read_text() == manifest  # … nor recorded
    assert not list(run.glob(f".{reader}.replaced-*"))

    verify = _invoke(tiny_run, "verify", str(run))
    assert verify.exit_code == 1
    vt = _text(verify)
    assert f"corrupt {run / rel}" in vt and f"earliest stage to re-run is `{writer}`" in vt


def test_truncated_and_deleted_files_are_caught(tiny_run, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    ckpt = run / "pretrain" / "1L-64H" / "checkpoint" / "model.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    (run / "report" / "index.html").unlink()
    result = _invoke(tiny_run, "finetune", str(run), "--force")
    assert result.exit_code != 0 and "truncated" in _text(result) and str(ckpt) in _text(result)
    verify = _invoke(tiny_run, "verify", str(run))
    vt = _text(verify)
    assert verify.exit_code == 1
    assert f"corrupt {ckpt}: truncated" in vt and f"missing {run / 'report' / 'index.html'}" in vt
    assert "earliest stage to re-run is `pretrain`" in vt


def test_package_refuses_an_altered_exported_file_and_writes_no_bundle(tiny_run, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    exported = run / "export" / "2L-64H" / "2L-64H.s00.b8" / "onnx-int8.onnx"
    _flip(exported)
    out = tmp_path / "bundle"
    result = _invoke(tiny_run, "package", str(run), "--variant", "2L-64H.s00.b8", "--format", "onnx-int8",
                     "--out", str(out))
    assert result.exit_code != 0
    text = _text(result)
    assert str(exported) in text and "SHA-256 differs" in text and "`export` stage wrote" in text
    assert "--force export" in text
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))


def test_a_flipped_byte_in_a_bundle_is_caught_by_predict_and_verify(tiny_run, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    made = _invoke(tiny_run, "package", str(tiny_run.run_dir), "--variant", "2L-64H.s00.b8", "--format", "onnx-int8",
                   "--out", str(out))
    assert made.exit_code == 0, made.output
    assert _invoke(tiny_run, "verify", str(out)).exit_code == 0
    _flip(out / "model.onnx")
    predicted = _invoke(tiny_run, "predict", str(out), "a fine film")
    assert predicted.exit_code != 0 and "SHA-256 differs" in _text(predicted)
    verify = _invoke(tiny_run, "verify", str(out))
    assert verify.exit_code == 1 and "SHA-256 differs" in _text(verify) and str(out / "model.onnx") in _text(verify)


def _curves(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_force_pretrain_retrains_every_size_from_step_zero_and_later_stages_are_stale(tiny_run,
                                                                                      tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    sizes = ("1L-64H", "2L-64H")
    old = {s: _curves(run / "pretrain" / s / "curves.jsonl") for s in sizes}
    old_ckpt = {s: (run / "pretrain" / s / "checkpoint" / "model.safetensors").read_bytes() for s in sizes}
    result = _invoke(tiny_run, "pretrain", str(run), "--force")
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads((run / "pretrain" / "results.json").read_text())["models"]}
    for s in sizes:
        new = _curves(run / "pretrain" / s / "curves.jsonl")
        steps = [r["step"] for r in new]
        assert steps[0] == 0 and steps == sorted(steps) and steps.count(0) == 1  # one run, from step 0
        assert not {json.dumps(r, sort_keys=True) for r in new} & {json.dumps(r, sort_keys=True) for r in old[s]}
        assert rows[s]["steps"] == steps[-1] >= 1
        assert (run / "pretrain" / s / "checkpoint" / "model.safetensors").read_bytes() != old_ckpt[s]
    assert not list(run.glob(".pretrain.replaced-*"))
    status = _invoke(tiny_run, "status", str(run))
    # piped (CliRunner is no terminal), tables print as tab-separated rows: stage first
    lines = {line.split("\t")[0].strip(): line for line in status.output.splitlines() if line.count("\t") >= 2}
    assert "done" in lines["pretrain"] and "stale" not in lines["pretrain"]
    for stage in ("finetune", "compress", "export", "bench", "report"):
        assert "stale" in lines[stage], status.output
    refused = _invoke(tiny_run, "export", str(run), "--force")
    assert refused.exit_code != 0 and "stale" in _text(refused)


def _wait_for(predicate, what: str, proc: subprocess.Popen) -> None:
    """Poll `predicate` while `proc` runs (each poll waits up to 0.25 s for the process to end)."""
    for _ in range(1200):
        if predicate():
            return
        try:
            proc.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"the run ended (rc {proc.returncode}) before {what}: {proc.stdout.read() if proc.stdout else ''}")
    pytest.fail(f"gave up waiting for {what}")


def _pretrain_status(run: Path) -> str | None:
    try:
        return json.loads((run / "manifest.json").read_text())["stages"]["pretrain"]["status"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None


def test_a_second_run_refuses_at_once_and_a_killed_run_resumes(tmp_path: Path) -> None:
    _write_data(tmp_path)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.replace("time_budget_s: 2", "time_budget_s: 8"))
    run = tmp_path / "run"
    env = {**os.environ, "TLC_HOME": str(tmp_path / "home"), "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "tlc_export.cli", "run", str(recipe), "--run-dir", str(run), "--until", "pretrain"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: _pretrain_status(run) == "running" and any((run / "pretrain").glob("*/curves.jsonl")),
                  "pretraining started", first)
        # Frozen mid-pretraining (it holds the run's lock): however slow the machine, it cannot finish its
        # budget and release the lock while the second run starts, so the refusal is not a race.
        os.kill(first.pid, signal.SIGSTOP)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert second.returncode != 0
        err = " ".join(second.stderr.split())
        assert f"PID {first.pid}" in err and f"tlc run {recipe} --run-dir {run}" in err
        assert first.poll() is None  # refused while the first was still running, not after waiting for it
        os.kill(first.pid, signal.SIGKILL)  # a stopped process takes SIGKILL too
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert _pretrain_status(run) == "running"  # killed mid-stage
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming interrupted work" in rerun.stdout
    assert _pretrain_status(run) == "done"
    verify = subprocess.run([sys.executable, "-m", "tlc_export.cli", "verify", str(run)], env=env,
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
