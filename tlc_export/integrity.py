"""Checksums of every file a stage writes, and their verification where the files are read.

When a stage finishes, the runner records each file of its folder with its sha256 and size in
`<stage>/checksums.json` (and a summary — count, bytes, digest of the listing — in the stage's
manifest record). Files hashed while they were written (the token files: `note`) are not read
again. Before a stage runs, the files of every stage it depends on are checked against their
records (`verify_stages`): a file up to `FULL_CHECK_MAX_BYTES` at once; a larger one (a corpus's
token files, a big checkpoint) by a background thread while the stage runs. A mismatch stops the
stage before it is recorded as done, with an `IntegrityError` naming the file, the stage that wrote
it and the command that rebuilds it. `tlc package` checks the files it copies the same way, and
`tlc verify` (`tlc_export.verify`) checks everything.
"""

from __future__ import annotations

import _thread
import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlc_export import atomic
from tlc_export.errors import StageError

RECORD_FILE = "checksums.json"
FORMAT = "tlc-checksums"
FULL_CHECK_MAX_BYTES = 256 << 20  # checked before the stage starts; larger files in a background thread
CHUNK = 1 << 22

# Digests computed while a file was written: absolute path -> (size, mtime_ns, sha256).
_noted: dict[str, tuple[int, int, str]] = {}
_noted_lock = threading.Lock()


class IntegrityError(StageError):
    """A recorded file is missing or its bytes differ from what the stage that wrote it recorded."""


def sha256_file(path: str | os.PathLike[str], on_bytes: Callable[[int], None] | None = None,
                stop: threading.Event | None = None) -> str:
    """The file's sha256, read in 4 MB chunks (`on_bytes(n)` after each; returns early if `stop` is set)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            if stop is not None and stop.is_set():
                break
            chunk = f.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)  # releases the GIL for large buffers: a background check runs beside the stage
            if on_bytes is not None:
                on_bytes(len(chunk))
    return h.hexdigest()


def note(path: str | os.PathLike[str], sha256: str) -> None:
    """Record a digest computed while `path` was written, so the stage's record does not read it again.

    Kept with the file's size and modification time: a file changed after `note` is hashed anew.
    """
    st = os.stat(path)
    with _noted_lock:
        _noted[os.path.abspath(path)] = (st.st_size, st.st_mtime_ns, sha256)


def _noted_digest(path: Path, st: os.stat_result) -> str | None:
    with _noted_lock:
        hit = _noted.get(os.path.abspath(path))
    if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2]
    return None


def _recordable(rel: str) -> bool:
    """Not the record itself, nor an atomic write's temporary (a `.name.XXXX.tmp` beside its target)."""
    name = rel.rsplit("/", 1)[-1]
    return rel != RECORD_FILE and not (name.startswith(".") and name.endswith(".tmp"))


def list_files(folder: Path) -> list[str]:
    """Every file under `folder` (following a link at its top: a sweep point's store entry), relative, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/")
            if _recordable(rel):
                out.append(rel)
    return sorted(out)


def hash_folder(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {sha256, bytes}} of every file under `folder`."""
    files: dict[str, dict[str, Any]] = {}
    for rel in list_files(folder):
        path = folder / rel
        st = path.stat()
        sha = _noted_digest(path, st) or sha256_file(path)
        files[rel] = {"sha256": sha, "bytes": st.st_size}
    return files


def listing_digest(files: dict[str, dict[str, Any]]) -> str:
    """One sha256 over the listing: equal exactly when every file's path, size and bytes are equal."""
    lines = "".join(f"{rel}\0{f['bytes']}\0{f['sha256']}\n" for rel, f in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def record_stage(folder: Path, stage: str) -> dict[str, Any]:
    """Write `folder/checksums.json` for the stage's files; returns the manifest's summary {count, bytes, digest}."""
    files = hash_folder(folder)
    summary = {"count": len(files), "bytes": sum(f["bytes"] for f in files.values()), "digest": listing_digest(files)}
    atomic.write_json(folder / RECORD_FILE, {"format": FORMAT, "version": 1, "stage": stage,
                                             "recorded_at": time.time(), **summary, "files": files})
    return summary


def read_record(folder: Path) -> dict[str, Any] | None:
    """The stage folder's checksums.json, or None when there is none (a run from before tlc recorded them)."""
    path = folder / RECORD_FILE
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"format": FORMAT, "files": {}, "unreadable": True}
    if not isinstance(rec, dict) or not isinstance(rec.get("files"), dict):
        return {"format": FORMAT, "files": {}, "unreadable": True}
    return rec


@dataclass(frozen=True)
class Fault:
    """One recorded file that is not as recorded."""

    stage: str
    path: Path  # the file
    kind: str  # missing | corrupt
    detail: str


def check_file(path: Path, want: dict[str, Any], full: bool = True,
               on_bytes: Callable[[int], None] | None = None) -> tuple[str, str] | None:
    """None when `path` matches its record {sha256, bytes}; else (kind, detail). `full=False`: size only."""
    if not path.is_file():
        return "missing", "missing"
    size = path.stat().st_size
    if size != want["bytes"]:
        how = "truncated: " if size < want["bytes"] else ""
        return "corrupt", f"{how}{size:,} bytes, but {want['bytes']:,} were recorded"
    if full and sha256_file(path, on_bytes) != want["sha256"]:
        return "corrupt", "its SHA-256 differs from the recorded one (same size: bytes changed in place)"
    return None


def rebuild_command(run_root: Path, stage: str) -> str:
    """The command that writes `stage`'s files again (and every later stage)."""
    manifest_path = run_root / "manifest.json"
    meta: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            meta = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
    if stage == "package":
        return f"rm -r {run_root / 'package' / 'export'} && tlc package {run_root} --out …"  # re-exports the pair
    recipe = meta.get("recipe_path")
    sweep = meta.get("sweep") if meta.get("kind") != "sweep" else None
    if isinstance(sweep, dict) and "parent" in sweep:
        parent = os.path.normpath(run_root / sweep["parent"])
        return f"tlc run {recipe or 'RECIPE'} --run-dir {parent} --point {sweep.get('index')} --force {stage}"
    if recipe:
        return f"tlc run {recipe} --run-dir {run_root} --force {stage}"
    return f"tlc run RECIPE --run-dir {run_root} --force {stage}"


def fault_message(run_root: Path, fault: Fault, reader: str | None = None) -> str:
    where = f" (read by {reader})" if reader else ""
    return (f"{fault.path}: {fault.detail}{where}; it is not the file the `{fault.stage}` stage wrote "
            f"(recorded in {fault.stage}/{RECORD_FILE}). Nothing downstream was written. "
            f"Rebuild it with `{rebuild_command(run_root, fault.stage)}`")


# The background check stops a stage with a simulated signal of its own, not SIGINT: Python ignores a simulated
# SIGINT whenever SIGINT's handler is not its own (a process started with SIGINT ignored, as under nohup, or a
# library that replaced the handler), and the stage must stop all the same. Nothing sends this signal for real.
INTERRUPT_SIGNAL = signal.SIGUSR2


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt("the background integrity check found a changed input")


class BackgroundCheck:
    """Hashes large files in a thread while the stage runs; a mismatch interrupts the main thread."""

    def __init__(self, run_root: Path, items: list[tuple[str, Path, dict[str, Any]]], reader: str) -> None:
        self.run_root, self.items, self.reader = run_root, items, reader
        self.fault: Fault | None = None
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self._watching = False  # the main thread is inside the stage (`watch`): a fault interrupts it
        self._interrupted = False
        self._previous_handler: Any = None  # INTERRUPT_SIGNAL's handler before `watch` installed ours
        self._handler_installed = False
        self._thread = threading.Thread(target=self._work, name="tlc-verify", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        for stage, path, want in self.items:
            if self._stop.is_set():
                return
            try:
                got = sha256_file(path, stop=self._stop)
            except OSError as exc:
                self.fault = Fault(stage, path, "missing", f"unreadable ({exc})")
            else:
                if self._stop.is_set():
                    return
                if got != want["sha256"]:
                    self.fault = Fault(stage, path, "corrupt",
                                       "its SHA-256 differs from the recorded one (found by the background check)")
            if self.fault is not None:
                with self._guard:
                    if self._watching:
                        # The stage stops at its next bytecode (a KeyboardInterrupt the runner turns into this error).
                        _thread.interrupt_main(INTERRUPT_SIGNAL)
                        self._interrupted = True
                return

    def watch(self) -> None:
        """The stage starts now: a fault found from here on interrupts it; one found already is raised here."""
        # Only the main thread can take a handler; elsewhere a fault is raised by `finish` after the stage.
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(INTERRUPT_SIGNAL, _raise_interrupt)
            self._handler_installed = True
        with self._guard:
            if self.fault is not None:
                self._restore_handler()
                raise IntegrityError(fault_message(self.run_root, self.fault, self.reader))
            self._watching = self._handler_installed

    def _restore_handler(self) -> None:
        if self._handler_installed:
            signal.signal(INTERRUPT_SIGNAL, self._previous_handler)
            self._handler_installed = False

    def error(self) -> IntegrityError | None:
        return IntegrityError(fault_message(self.run_root, self.fault, self.reader)) if self.fault else None

    def finish(self) -> None:
        """Wait for the check (the stage is over); raise its fault."""
        with self._guard:
            self._watching = False
        self._thread.join()
        err = self.error()
        if err is not None and self._interrupted:
            # The interrupt sent to the stage may still be pending: take it here, not in the caller's handler.
            with contextlib.suppress(KeyboardInterrupt):
                for _ in range(200):
                    time.sleep(0.005)
        self._restore_handler()
        if err is not None:
            raise err

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()
        self._restore_handler()


def verify_stages(run_root: Path, stage_dirs: Iterable[tuple[str, Path]], reader: str,
                  background: bool = True) -> BackgroundCheck | None:
    """Check the recorded files of the given (stage, folder) pairs before `reader` reads them.

    Raises `IntegrityError` on the first missing, resized or (≤ FULL_CHECK_MAX_BYTES) changed file; larger files
    are hashed by the returned `BackgroundCheck` (call `finish()` before recording the reader as done), or here
    when `background` is False. Stages without a record (written before tlc recorded checksums) are skipped.
    """
    large: list[tuple[str, Path, dict[str, Any]]] = []
    for stage, folder in stage_dirs:
        rec = read_record(folder)
        if rec is None:
            continue
        if rec.get("unreadable"):
            raise IntegrityError(fault_message(run_root, Fault(stage, folder / RECORD_FILE, "corrupt", "unreadable"),
                                               reader))
        for rel, want in rec["files"].items():
            path = folder / rel
            is_large = background and int(want["bytes"]) > FULL_CHECK_MAX_BYTES
            bad = check_file(path, want, full=not is_large)
            if bad is not None:
                raise IntegrityError(fault_message(run_root, Fault(stage, path, *bad), reader))
            if is_large:
                large.append((stage, path, want))
    return BackgroundCheck(run_root, large, reader) if large else None


def owning_record(run_root: Path, path: Path) -> tuple[str, Path, dict[str, Any]] | None:
    """(stage, folder, record) of the nearest folder above `path` (inside the run) holding a checksums.json."""
    root = run_root.absolute()
    folder = path.absolute().parent
    while True:
        rec = read_record(folder)
        if rec is not None:
            return str(rec.get("stage") or folder.name), folder, rec
        if folder == root or root not in folder.parents:
            return None
        folder = folder.parent


def verify_files(run_root: Path, paths: Iterable[Path], reader: str) -> None:
    """Check each file (fully, whatever its size) against the record of the stage that wrote it.

    A file in a recorded stage folder but not in its record (added after the stage finished) is refused. A file of
    a stage without any record (a run from before tlc recorded checksums) is not checked, as in the runner;
    `tlc verify` lists such files as unrecorded.
    """
    for path in paths:
        owner = owning_record(run_root, path)
        if owner is None:
            continue
        stage, folder, rec = owner
        rel = path.absolute().relative_to(folder.absolute()).as_posix()
        want = rec["files"].get(rel)
        if want is None:
            raise IntegrityError(
                f"{path}: not among the files the `{stage}` stage recorded in {folder / RECORD_FILE}; it was added "
                f"after the stage finished. Rebuild it with `{rebuild_command(run_root, stage)}`")
        bad = check_file(path, want)
        if bad is not None:
            raise IntegrityError(fault_message(run_root, Fault(stage, path, *bad), reader))
