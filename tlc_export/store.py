"""The stage store: stage folders kept by cache key, shared by the sub-runs of a sweep.

A sweep's parent run directory holds `stages/<stage>/<cache key>/`: the folder a stage wrote,
and beside it `<cache key>.json`, the store's record of it (status, outputs, which point built
it). A point's own `<stage>` folder is a relative symbolic link to the entry of its key. The cache
key already covers everything that decides a stage's output (its recipe sections, its inputs'
keys and the code version), so two points whose keys agree can use one folder: the data stage
and tokenizer when only `pretrain.*` varies, pretraining when only `finetune.*` varies.

Several processes (points launched as separate jobs on shared storage) may want the same entry:
whoever creates `<cache key>.lock` first (O_EXCL) builds it; the others wait for the record to say
done. A lock whose process is gone (same host, no such pid) is stale and taken over; the partial
work in the entry is resumed like any interrupted stage.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tlc_export import atomic
from tlc_export.errors import StageError

STORE_DIR = "stages"
# A sweep's parent run directory: the plan, one sub-run per point, and the stage store they share.
PLAN_FILE = "sweep.json"
POINTS_DIR = "points"
POLL_S = 2.0


class StageStore:
    """`root` is `<parent run dir>/stages`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def _record_path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.json"

    def record(self, stage: str, key: str) -> dict[str, Any] | None:
        path = self._record_path(stage, key)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def done(self, stage: str, key: str) -> dict[str, Any] | None:
        """The entry's record when it is finished and its folder is there, else None."""
        rec = self.record(stage, key)
        if rec is None or rec.get("status") != "done" or not self.entry(stage, key).is_dir():
            return None
        return rec

    def save_record(self, stage: str, key: str, record: dict[str, Any]) -> None:
        atomic.write_json(self._record_path(stage, key), record)

    def link(self, stage_dir: Path, stage: str, key: str) -> None:
        """Make `stage_dir` (a run directory's `<stage>` folder) a relative link to the entry."""
        target = self.entry(stage, key)
        target.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(target, stage_dir.parent)
        if stage_dir.is_symlink():
            if os.readlink(stage_dir) == rel:
                return
            stage_dir.unlink()
        elif stage_dir.exists():
            raise StageError(
                f"{stage_dir}: a folder where the sweep's stage store expects a link to {target}; "
                "move it away (it is not from this sweep's store) and run again"
            )
        stage_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = stage_dir.with_name(f".{stage_dir.name}.link")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        try:
            os.symlink(rel, tmp, target_is_directory=True)
        except OSError as exc:
            raise StageError(
                f"{stage_dir}: cannot create a symbolic link ({exc}); sweeps share stages through links, so the "
                "run directory must be on a file system that supports them"
            ) from None
        os.replace(tmp, stage_dir)

    @contextlib.contextmanager
    def lock(self, stage: str, key: str, on_wait: Callable[[str], None] | None = None,
             is_done: Callable[[], bool] | None = None) -> Iterator[bool]:
        """Hold the entry's lock; yields False without locking if `is_done()` turns true while waiting."""
        path = self.root / stage / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        told = False
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(path)
                if holder is not None and _stale(holder):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    continue
                if is_done is not None and is_done():
                    yield False
                    return
                if on_wait is not None and not told:
                    who = f"{holder.get('host')} pid {holder.get('pid')}" if holder else "another process"
                    on_wait(f"{stage} (key {key[:8]}) is being built by {who}; waiting "
                            f"(delete {path} if that process is gone)")
                    told = True
                time.sleep(POLL_S)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            break
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _stale(holder: dict[str, Any]) -> bool:
    """A lock held by a process of this host that no longer exists."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False
