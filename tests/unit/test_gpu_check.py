"""The one-call GPU check: the plan fits in 8 minutes, checks run in order of value, each capped by the time left
(on a fake clock), a summary after every check, targets and the paths not verified; also without a GPU."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runtime_bench import gpu_check

ORDER = ["environment", "tensorrt", "onnxruntime_cuda", "pretrain_throughput", "bench_torch", "translation",
         "pretrain_resume", "pytest_gpu"]


def test_import_needs_only_the_standard_library() -> None:
    code = "import sys, runtime_bench.gpu_check; print(sorted(m for m in ('torch', 'pydantic', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plan_prints_the_checks_in_order_with_estimates_within_8_minutes() -> None:
    out = subprocess.run([sys.executable, "-m", "runtime_bench.gpu_check", "--plan"], capture_output=True, text=True,
                         check=True, cwd=Path(gpu_check.REPO), env={**os.environ, "PYTHONPATH": str(gpu_check.REPO)})
    rows = [line.split() for line in out.stdout.splitlines()[1:-1]]
    assert [r[1] for r in rows] == ORDER
    estimates = [float(r[2]) for r in rows]
    assert all(e > 0 for e in estimates) and [float(r[3]) for r in rows][-1] == sum(estimates)
    assert sum(estimates) <= 8 * 60 and sum(c.estimate_s for c in gpu_check.CHECKS) == sum(estimates)
    assert out.stdout.splitlines()[-1].startswith(f"total {sum(estimates):.0f} s")


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _args(tmp_path: Path, budget: float = 470.0, only: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(out=str(tmp_path / "out"), work=str(tmp_path / "work"), budget_s=budget, only=only,
                              pretrain_sizes=None, pretrain_device="cuda", mt_device="cuda")


def _rows(backend: str, p50: float, model: str = "12L-768H") -> list[dict]:
    return [{"model": model, "backend": backend, "device": "cuda", "dtype": "fp16", "batch": 1, "latency_ms_p50": p50,
             "status": "ok"}]


def test_checks_are_capped_by_the_time_left_and_the_summary_is_written_after_each(tmp_path: Path) -> None:
    """A slow compile in pretrain_throughput eats the budget: the next check gets only what is left and is
    stopped at it (skipped), the later ones are skipped without starting; nothing overruns 470 s."""
    clock = FakeClock()
    # (seconds on the fake clock, status, figures) per check that starts
    script = {
        "environment": (5, "ok", {"gpu": "NVIDIA H100 80GB HBM3"}),
        "tensorrt": (12, "unavailable", None),
        "onnxruntime_cuda": (30, "ok", {"rows": _rows("onnxruntime", 1.4)}),
        "pretrain_throughput": (330, "ok", {"ratio_vs_plain": 1.31, "ratio_vs_plain_compiled": 0.97,
                                            "ours": {"model_flops_mfu": 0.41}}),
        "bench_torch": (None, "skipped", None),  # runs into its deadline
    }
    calls: list[tuple[str, float, list[str]]] = []

    def runner(check: gpu_check.Check, args: argparse.Namespace, timeout: float) -> dict:
        summary = json.loads((tmp_path / "out" / "summary.json").read_text()) if calls else {"checks": {}}
        calls.append((check.name, timeout, list(summary["checks"])))
        seconds, status, figures = script[check.name]
        clock.t += timeout if seconds is None else seconds
        return {"check": check.name, "status": status, "seconds": seconds, "figures": figures,
                "error": None if status == "ok" else status}

    records = gpu_check.run_checks(_args(tmp_path), clock=clock, runner=runner)
    assert [r["check"] for r in records] == ORDER
    assert [(name, round(t)) for name, t, _ in calls] == [("environment", 470), ("tensorrt", 465),
                                                           ("onnxruntime_cuda", 453), ("pretrain_throughput", 423),
                                                           ("bench_torch", 93)]
    # The summary on disk already held every earlier check when the next one started.
    assert [seen for _, _, seen in calls] == [[], ORDER[:1], ORDER[:2], ORDER[:3], ORDER[:4]]
    statuses = {r["check"]: r["status"] for r in records}
    assert statuses["translation"] == statuses["pretrain_resume"] == statuses["pytest_gpu"] == "skipped"
    assert "needs ~35 s" in records[5]["error"]
    assert clock.t - 1000.0 <= 470.0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["complete"] is True and summary["ok"] is False  # unavailable and skipped are not ok
    assert [n["check"] for n in summary["not_verified"]] == ["tensorrt", "bench_torch", "translation",
                                                             "pretrain_resume", "pytest_gpu"]
    t = summary["targets_met"]
    assert t["ours_vs_plain_eager"]["met"] is True and t["ours_vs_plain_compiled"]["met"] is False
    assert t["model_flops_mfu"]["met"] is False and t["model_flops_mfu"]["value"] == 0.41
    assert t["batch1_p50_ms"] == {**t["batch1_p50_ms"], "value": 1.4, "met": False, "by": "onnxruntime cuda fp16"}
    lines = [json.loads(x) for x in (tmp_path / "out" / "checks.jsonl").read_text().splitlines()]
    assert [x["check"] for x in lines] == ORDER


def test_everything_ok_is_ok_and_the_best_12l_row_decides_batch_1(tmp_path: Path) -> None:
    clock = FakeClock()
    figures = {
        "bench_torch": {"rows": _rows("torch-compile", 1.06) + _rows("torch-eager", 0.5, model="2L-128H")},
        "tensorrt": {"rows": _rows("tensorrt", 0.3, model="2L-128H")},  # the small model: not the target's
        "onnxruntime_cuda": {"rows": _rows("onnxruntime", 0.95)},
    }

    def runner(check: gpu_check.Check, args: argparse.Namespace, timeout: float) -> dict:
        clock.t += 1
        return {"check": check.name, "status": "ok", "seconds": 1, "figures": figures.get(check.name, {}), "error": None}

    gpu_check.run_checks(_args(tmp_path), clock=clock, runner=runner)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ok"] is True and summary["not_verified"] == []
    assert summary["targets_met"]["batch1_p50_ms"]["value"] == 0.95
    assert summary["targets_met"]["ours_vs_plain_eager"]["met"] is None  # not measured: neither met nor missed


def test_a_call_cut_short_keeps_its_summary(tmp_path: Path) -> None:
    clock = FakeClock()

    def runner(check: gpu_check.Check, args: argparse.Namespace, timeout: float) -> dict:
        if check.name == "onnxruntime_cuda":
            raise KeyboardInterrupt  # the call is killed from outside
        clock.t += 1
        return {"check": check.name, "status": "ok", "seconds": 1, "figures": {}, "error": None}

    with pytest.raises(KeyboardInterrupt):
        gpu_check.run_checks(_args(tmp_path), clock=clock, runner=runner)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["checks"] == {"environment": "ok", "tensorrt": "ok"} and summary["complete"] is False
    assert summary["ok"] is False and {n["status"] for n in summary["not_verified"]} == {"pending"}


def test_a_pytest_timeout_is_skipped_not_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_time(cmd: list[str], seconds: float, **kw: object) -> tuple[int, str]:
        raise gpu_check.OutOfTime(f"stopped after {seconds:.0f} s, the time left")

    monkeypatch.setattr(gpu_check, "run_capped", out_of_time)
    args = _args(tmp_path)
    args.deadline = __import__("time").time() + 30
    rec = gpu_check.run_here(gpu_check.BY_NAME["pytest_gpu"], args)
    assert rec["status"] == "skipped" and "ran out of time" in rec["error"]
    monkeypatch.setattr(gpu_check, "run_capped", lambda cmd, seconds, **kw: (1, "1 failed, 3 passed"))
    assert gpu_check.run_here(gpu_check.BY_NAME["pytest_gpu"], args)["status"] == "fail"


def test_run_capped_kills_the_whole_process_group_at_the_deadline(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # A shell (it starts in milliseconds, unlike a Python child on a loaded machine) that leaves a grandchild
    # running and waits for it: the 3 s deadline always finds both alive.
    with pytest.raises(gpu_check.OutOfTime):
        gpu_check.run_capped(["sh", "-c", f"sleep 60 & echo $! > '{pid_file}'; wait"], 3.0)
    grandchild = int(pid_file.read_text())

    def state() -> str:
        try:
            return Path(f"/proc/{grandchild}/status").read_text().split("State:")[1].split()[0]
        except FileNotFoundError:
            return "gone"

    # SIGKILL is delivered asynchronously: a killed grandchild may still be running its exit ('R') for a
    # moment, while one left alive stays asleep in `sleep 60` ('S'). Poll a bounded number of times (no clock).
    for _ in range(200_000):
        if state() in ("gone", "Z"):
            break
        os.sched_yield()
    assert state() in ("gone", "Z")  # killed with its parent, not left running
    with pytest.raises(gpu_check.OutOfTime):
        gpu_check.run_capped(["true"], 0.5)  # no time left: not even started
    assert gpu_check.run_capped([sys.executable, "-c", "print('hi')"], 30) == (0, "hi\n")


def test_checks_without_a_gpu_write_lines_and_a_summary(tmp_path: Path) -> None:
    """The real thing on this machine: environment here, translation in a child process; both unavailable
    without CUDA (and the summary is not ok: unavailable is not verified)."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the check itself (runtime_bench.gpu_check --only translation)")
    rc = gpu_check.main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                         "--only", "environment,translation", "--budget-s", "100"])
    lines = [json.loads(x) for x in (tmp_path / "out" / "checks.jsonl").read_text().splitlines()]
    assert [r["check"] for r in lines] == ["environment", "translation"]
    env = lines[0]["figures"]
    assert lines[0]["status"] == "unavailable" and "CUDA" in lines[0]["error"]
    assert env["torch"] and env["pydantic"] and env["cuda_available"] is False
    assert lines[1]["status"] == "unavailable" and "CUDA" in lines[1]["error"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["environment"] == env and summary["ok"] is False and rc == 1
    assert {n["check"] for n in summary["not_verified"]} == {"environment", "translation"}


def test_tensorrt_bound_files_of_the_check_pass_the_rules(tmp_path: Path) -> None:
    """The files the tensorrt check parses and builds (fp16, INT8 fp16 Q/DQ, INT4 weight-only) are the export
    stage's kinds and break none of the TensorRT rules: the parser sees what a recipe would send it."""
    import onnx

    from tlc_export.export.trt_rules import check_tensorrt_onnx

    files = gpu_check._trt_files(tmp_path)
    assert set(files) == {"tensorrt-fp16", "tensorrt-int8", "tensorrt-int4"}
    for fmt, (path, precision) in files.items():
        assert check_tensorrt_onnx(path, precision) == [], fmt
        onnx.checker.check_model(str(path))
    int4 = onnx.load(str(files["tensorrt-int4"][0]))
    assert any(i.data_type == onnx.TensorProto.INT4 for i in int4.graph.initializer)
    int8 = onnx.load(str(files["tensorrt-int8"][0]))
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
