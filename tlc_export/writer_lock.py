"""One writer per run directory: an OS lock (`fcntl.flock`) on `RUN_DIR/.tlc.lock` for a whole command.

`tlc run`, the stage commands, `tlc report` and `tlc package` take it before they write; a second
such command on the same run directory refuses at once, naming the holder's PID and command (which
the holder writes into the lock file). The OS drops the lock when its process ends, however it
ends, so a run killed with SIGKILL leaves nothing to clean up and the next run resumes. torchrun's
ranks other than 0 take no lock: they write only what rank 0 coordinates, under rank 0's lock.
Within one process the lock is re-entrant (a sweep's `tlc run` holds its parent and, in turn,
each point's directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tlc_export import distributed
from tlc_export.errors import TlcError

LOCK_FILE = ".tlc.lock"

_held: dict[str, tuple[int, int]] = {}  # resolved run dir -> (fd, depth)


class RunDirBusy(TlcError):
    """Another process holds the run directory's writer lock."""


def holder(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the lock file says about its holder (pid, command, host, since), whether or not it is still held."""
    try:
        text = (Path(root) / LOCK_FILE).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, json.JSONDecodeError):
        return None


def is_locked(root: str | os.PathLike[str]) -> bool:
    """Whether some process holds the lock now (probed with a shared, non-blocking lock that is dropped at once)."""
    path = Path(root) / LOCK_FILE
    if not path.is_file():
        return False
    if os.path.realpath(root) in _held:
        return True
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _command() -> str:
    prog = os.path.basename(sys.argv[0]) if sys.argv else "python"
    if prog in ("cli.py", "__main__.py"):  # python -m tlc_export.cli, torchrun … -m tlc_export.cli
        prog = "tlc"
    return " ".join([prog, *sys.argv[1:]])


def _try_lock(fd: int) -> str:
    """held | busy | unsupported."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "busy"
    except OSError:
        return "unsupported"
    return "held"


@contextlib.contextmanager
def writer_lock(root: str | os.PathLike[str], what: str | None = None) -> Iterator[None]:
    """Hold `root`'s writer lock for the block; raise `RunDirBusy` at once if another process holds it."""
    if not distributed.is_main():
        yield  # rank 0 of this torchrun job holds it for every rank
        return
    root = Path(root)
    key = os.path.realpath(root)
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    state = _try_lock(fd)
    if state == "unsupported":  # a file system without locks (some network mounts): say so, and go on unguarded
        os.close(fd)
        print(f"warning: {path}: the file system refuses locks; nothing stops a second writer on this run directory",
              file=sys.stderr)
        yield
        return
    if state == "busy":
        os.close(fd)
        h = holder(root) or {}
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(h["since"])) if h.get("since") else "?"
        raise RunDirBusy(
            f"{root}: in use by PID {h.get('pid', '?')} on {h.get('host', '?')} (`{h.get('command', '?')}`, since "
            f"{since}); one writer per run directory, so {what or 'this command'} did not start. Wait for it to "
            f"finish, or stop it (kill {h.get('pid', 'PID')}); a stopped run resumes where it was."
        )
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(), "since": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    _held[key] = (fd, 1)
    try:
        yield
    finally:
        fd, _ = _held.pop(key)
        os.close(fd)  # releases the flock; the file stays (removing it would race a waiting process)
