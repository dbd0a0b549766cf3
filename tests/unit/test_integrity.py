"""Run-directory integrity with small real stages: checksums recorded, verified where read and by `tlc verify`,
`--force` from scratch with later stages stale, and one writer per run directory.

References are independent of the code under test: `hashlib` on the files, the manifest's JSON, and a plain
`fcntl.flock` holder in another process.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tlc_export import integrity, runner
from tlc_export.cli import main
from tlc_export.errors import StageError
from tlc_export.recipe import parse_recipe
from tlc_export.rundir import RunDir
from tlc_export.stages.base import Stage, StageContext
from tlc_export.tasks.classification.family import ClassificationFamily
from tlc_export.writer_lock import LOCK_FILE, RunDirBusy, writer_lock

RECIPE = """\
models: {sizes: [{layers: 1, hidden: 64}]}
pretrain: {time_budget_s: 5}
finetune: {lr: 1.0e-4}
"""


class Writer(Stage):
    """Writes `payload.bin` (a counter of its runs in it, so every run's bytes differ) and a nested file."""

    calls: dict[str, int] = {}
    fail_once: set[str] = set()
    wait_for_interrupt: set[str] = set()
    finished_waiting: dict[str, bool] = {}
    started = threading.Event()
    interrupted = threading.Event()  # set right after the background check has interrupted the main thread

    def run(self, ctx: StageContext) -> dict[str, Any]:
        Writer.calls[self.name] = Writer.calls.get(self.name, 0) + 1
        resumed = (ctx.out_dir / "partial.txt").exists()
        (ctx.out_dir / "partial.txt").write_text("started")
        if self.name in Writer.fail_once:
            Writer.fail_once.discard(self.name)
            raise RuntimeError("boom")
        if self.name in Writer.wait_for_interrupt:
            # Waits until the check has interrupted the main thread (no clock): the pending interrupt is raised
            # at the next bytecode, inside Event.wait's own Python code, so the flag below is never set.
            # The 60 s only guards against a hang when the check never interrupts (then the test fails).
            Writer.started.set()
            Writer.interrupted.wait(60)
            # Python raises a pending interrupt only at certain instructions (a backward jump is one): this
            # loop makes sure it is raised here, before the flag, however Event.wait returned.
            for _ in range(1000):
                pass
            Writer.finished_waiting[self.name] = True
        (ctx.out_dir / "payload.bin").write_bytes(bytes(range(256)) * 64 + bytes([Writer.calls[self.name]]))
        (ctx.out_dir / "sub").mkdir(exist_ok=True)
        (ctx.out_dir / "sub" / "nested.json").write_text(json.dumps({"run": Writer.calls[self.name]}))
        return {"resumed": resumed}


class Pre(Writer):
    name = "pretrain"
    sections = ("pretrain",)


class Fin(Writer):
    name = "finetune"
    sections = ("finetune",)
    inputs = ("pretrain",)


@pytest.fixture(autouse=True)
def _stages(monkeypatch: pytest.MonkeyPatch) -> None:
    Writer.calls, Writer.fail_once, Writer.wait_for_interrupt, Writer.finished_waiting = {}, set(), set(), {}
    Writer.interrupted.clear()
    real_interrupt = integrity._thread.interrupt_main

    def interrupt_main(*args):  # noqa: ANN002, ANN202
        real_interrupt(*args)
        Writer.interrupted.set()

    monkeypatch.setattr(integrity._thread, "interrupt_main", interrupt_main)
    monkeypatch.setattr(ClassificationFamily, "stages", lambda self: [Pre(), Fin()])


def _recipe():
    return parse_recipe(RECIPE)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip(path: Path, at: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, _sha(p)) for p in sorted(folder.rglob("*")) if p.is_file()}


def _verify(path: Path):
    return CliRunner().invoke(main, ["verify", str(path)])


def _text(result) -> str:
    return " ".join(result.output.split())


def test_every_file_is_recorded_with_its_sha256_and_size(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(), rd)
    for stage in ("pretrain", "finetune"):
        folder = tmp_path / stage
        rec = json.loads((folder / "checksums.json").read_text())
        on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "checksums.json")
        assert sorted(rec["files"]) == on_disk
        assert "sub/nested.json" in rec["files"] and "payload.bin" in rec["files"]
        for rel, want in rec["files"].items():
            assert want == {"sha256": _sha(folder / rel), "bytes": (folder / rel).stat().st_size}
        summary = json.loads((tmp_path / "manifest.json").read_text())["stages"][stage]["files"]
        assert summary["count"] == len(on_disk) and summary["bytes"] == sum((folder / r).stat().st_size for r in on_disk)
    fin = json.loads((tmp_path / "manifest.json").read_text())["stages"]["finetune"]
    pre = json.loads((tmp_path / "manifest.json").read_text())["stages"]["pretrain"]
    assert fin["input_digests"] == {"pretrain": pre["files"]["digest"]}


def test_cache_keys_do_not_depend_on_the_checksums(tmp_path: Path) -> None:
    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    runner.run_pipeline(_recipe(), a)
    Writer.calls = {"pretrain": 5, "finetune": 5}  # other bytes, other checksums
    runner.run_pipeline(_recipe(), b)
    assert a.record("pretrain").files["digest"] != b.record("pretrain").files["digest"]
    for stage in ("pretrain", "finetune"):
        assert a.record(stage).cache_key == b.record(stage).cache_key


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_input_stops_the_stage_that_reads_it_and_nothing_is_written(tmp_path: Path, damage: str) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(), rd)
    target = tmp_path / "pretrain" / "payload.bin"
    if damage == "flip":
        _flip(target)
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    else:
        target.unlink()
    before_fin, before_manifest = _snapshot(tmp_path / "finetune"), (tmp_path / "manifest.json").read_text()
    with pytest.raises(integrity.IntegrityError) as info:
        runner.run_pipeline(_recipe(), rd, force=["finetune"])
    msg = str(info.value)
    assert str(target) in msg and "`pretrain` stage wrote" in msg and "--force pretrain" in msg
    assert {"flip": "SHA-256 differs", "truncate": "truncated", "delete": "missing"}[damage] in msg
    assert Writer.calls == {"pretrain": 1, "finetune": 1}  # the reader never started
    assert _snapshot(tmp_path / "finetune") == before_fin
    assert (tmp_path / "manifest.json").read_text() == before_manifest
    assert not list(tmp_path.glob(".finetune.replaced-*"))


def test_a_large_input_is_checked_in_the_background_and_interrupts_the_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(), rd)
    _flip(tmp_path / "pretrain" / "payload.bin", at=5000)
    monkeypatch.setattr(integrity, "FULL_CHECK_MAX_BYTES", 1000)  # payload.bin (16 KB) is "large" now
    real = integrity.sha256_file

    def after_the_stage_started(path, on_bytes=None, stop=None):  # the check finds the fault mid-stage
        if threading.current_thread().name == "tlc-verify":
            assert Writer.started.wait(60)
        return real(path, on_bytes, stop)

    monkeypatch.setattr(integrity, "sha256_file", after_the_stage_started)
    Writer.started.clear()
    Writer.wait_for_interrupt = {"finetune"}
    with pytest.raises(integrity.IntegrityError, match="background check"):
        runner.run_pipeline(_recipe(), rd, force=["finetune"])
    assert Writer.calls["finetune"] == 2  # it started (the size matched) …
    assert "finetune" not in Writer.finished_waiting  # … and was stopped while it waited
    assert rd.record("finetune").status == "failed"


def test_a_large_input_found_bad_before_the_stage_starts_stops_it_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(), rd)
    _flip(tmp_path / "pretrain" / "payload.bin", at=5000)
    monkeypatch.setattr(integrity, "FULL_CHECK_MAX_BYTES", 1000)
    real_watch = integrity.BackgroundCheck.watch

    def late_watch(self):  # the check has finished before the stage begins
        self._thread.join()
        real_watch(self)

    monkeypatch.setattr(integrity.BackgroundCheck, "watch", late_watch)
    with pytest.raises(integrity.IntegrityError, match="SHA-256 differs"):
        runner.run_pipeline(_recipe(), rd, force=["finetune"])
    assert Writer.calls["finetune"] == 1 and rd.record("finetune").status == "failed"


def test_a_large_intact_input_passes_the_background_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(), rd)
    monkeypatch.setattr(integrity, "FULL_CHECK_MAX_BYTES", 1000)
    runner.run_pipeline(_recipe(), rd, force=["finetune"])
    assert rd.record("finetune").status == "done" and Writer.calls["finetune"] == 2


def test_verify_passes_on_a_clean_run_and_finds_each_fault(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(), rd)
    ok = _verify(tmp_path)
    assert ok.exit_code == 0, ok.output
    assert "every recorded file matches" in _text(ok)

    _flip(tmp_path / "finetune" / "payload.bin")
    (tmp_path / "finetune" / "sub" / "nested.json").unlink()
    (tmp_path / "finetune" / "extra.txt").write_text("added by hand")
    bad = _verify(tmp_path)
    assert bad.exit_code == 1
    out = _text(bad)
    assert f"corrupt {tmp_path / 'finetune' / 'payload.bin'}" in out
    assert f"missing {tmp_path / 'finetune' / 'sub' / 'nested.json'}" in out
    assert f"unrecorded {tmp_path / 'finetune' / 'extra.txt'}" in out
    assert "earliest stage to re-run is `finetune`" in out

    (tmp_path / "pretrain" / "payload.bin").write_bytes(b"short")
    worse = _verify(tmp_path)
    assert worse.exit_code == 1 and "earliest stage to re-run is `pretrain`" in _text(worse)
    assert "truncated" in _text(worse)


def test_force_reruns_from_scratch_and_marks_later_stages_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(), rd)
    (tmp_path / "pretrain" / "left_by_old_run.txt").write_text("old")  # would survive a resume
    old_payload = _sha(tmp_path / "pretrain" / "payload.bin")
    runner.run_pipeline(_recipe(), rd, only=["pretrain"], force=["pretrain"])
    assert Writer.calls == {"pretrain": 2, "finetune": 1}
    assert rd.record("pretrain").outputs["resumed"] is False  # from scratch: no partial work found
    assert not (tmp_path / "pretrain" / "left_by_old_run.txt").exists()
    assert _sha(tmp_path / "pretrain" / "payload.bin") != old_payload
    assert not list(tmp_path.glob(".pretrain.replaced-*"))  # deleted once the new run finished

    status = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert status.exit_code == 0
    fin_line = next(line for line in status.output.splitlines() if "finetune" in line)
    assert "stale" in fin_line
    with monkeypatch.context() as mp:
        mp.setattr(ClassificationFamily, "stages", lambda self: [Pre(), Fin(), _Later()])
        with pytest.raises(StageError, match="`finetune` is stale"):  # a stage that needs finetune refuses it stale
            runner.run_pipeline(_recipe(), rd, only=["later"])
    runner.run_pipeline(_recipe(), rd)  # a plain run re-runs the stale stage
    assert Writer.calls == {"pretrain": 2, "finetune": 2}
    fresh = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert "stale" not in fresh.output


class _Later(Writer):
    name = "later"
    sections = ("finetune",)
    inputs = ("finetune",)


def test_an_interrupted_forced_stage_resumes_and_the_old_outputs_wait_until_it_is_done(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(), rd)
    old = _sha(tmp_path / "pretrain" / "payload.bin")
    Writer.fail_once = {"pretrain"}
    with pytest.raises(StageError, match="boom"):
        runner.run_pipeline(_recipe(), rd, force=["pretrain"])
    aside = list(tmp_path.glob(".pretrain.replaced-*"))
    assert len(aside) == 1 and _sha(aside[0] / "payload.bin") == old  # kept while the new run is unfinished
    runner.run_pipeline(_recipe(), rd)  # no --force: the interrupted forced run resumes
    assert rd.record("pretrain").outputs["resumed"] is True
    assert not aside[0].exists()
    assert Writer.calls == {"pretrain": 3, "finetune": 2}  # finetune re-ran: its input changed


_HOLDER = textwrap.dedent("""
    import fcntl, json, os, sys, time
    root = sys.argv[1]
    fd = os.open(os.path.join(root, %r), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": "h", "command": "tlc run holder.yaml", "since": time.time()}).encode())
    print("locked", flush=True)
    sys.stdin.read()
""") % LOCK_FILE


def test_a_second_writer_refuses_naming_the_holder_and_a_killed_holder_releases(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    runner.run_pipeline(_recipe(), rd)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy) as info:
            runner.run_pipeline(_recipe(), rd, force=["finetune"])
        assert f"PID {holder.pid}" in str(info.value) and "tlc run holder.yaml" in str(info.value)
        assert Writer.calls == {"pretrain": 1, "finetune": 1}
        for args in (["finetune", str(tmp_path), "--force"], ["report", str(tmp_path)], ["export", str(tmp_path)],
                     ["run", str(tmp_path / "recipe.resolved.yaml"), "--run-dir", str(tmp_path)],
                     ["package", str(tmp_path), "--variant", "1L-64H.s00.b32", "--out", str(tmp_path.parent / "b")]):
            busy = CliRunner().invoke(main, args)
            assert busy.exit_code != 0 and f"PID {holder.pid}" in _text(busy), (args, busy.output)
        assert Writer.calls == {"pretrain": 1, "finetune": 1}
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        runner.run_pipeline(_recipe(), rd, force=["finetune"])  # the OS released the lock
        assert Writer.calls == {"pretrain": 1, "finetune": 2}
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_other_torchrun_ranks_share_rank_zeros_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with writer_lock(tmp_path):
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", "2")
        # Another process would refuse; a rank > 0 of this job takes no lock of its own.
        code = ("from tlc_export.writer_lock import writer_lock\nimport sys\n"
                "with writer_lock(sys.argv[1]):\n    print('entered')\n")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert out.returncode == 0 and "entered" in out.stdout, out.stderr
        monkeypatch.setenv("RANK", "0")
        out0 = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert out0.returncode != 0 and f"PID {os.getpid()}" in " ".join(out0.stderr.split())


def test_a_digest_noted_while_writing_is_not_read_again_unless_the_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    path.write_bytes(b"\x01\x02" * 1000)
    integrity.note(path, "0" * 64)  # what the writer's streaming hash said (here: a marker no file hashes to)
    assert integrity.hash_folder(tmp_path)["tokens.bin"]["sha256"] == "0" * 64
    path.write_bytes(b"\x01\x02" * 1001)  # changed after the note: hashed anew
    assert integrity.hash_folder(tmp_path)["tokens.bin"]["sha256"] == _sha(path)

