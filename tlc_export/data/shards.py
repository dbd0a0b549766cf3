"""The resumable, checksummed, atomically published shard writer under both token-file formats
(`data.token_writer`: a corpus's token files; the translation family's pair files).

Work goes to a partial folder beside the final one. After every shard the growing files are fsync'd and
`progress.json` records how far they got, with a signature of everything that decides the output (plan,
tokenizer, dtype, format version): a killed run truncates the files to the recorded point, re-hashes the
kept part and goes on; partial work with another signature, or with no record at all, is discarded. The
partial folder is renamed onto the final one only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from tlc_export import atomic
from tlc_export.errors import StageError

PROGRESS_FILE = "progress.json"


def signature(spec: dict[str, Any]) -> str:
    """sha256 of everything that decides a writer's output (JSON, keys sorted)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def resume(partial: Path, sig: str) -> dict[str, Any] | None:
    """The progress record of `partial` when it has this signature (its files are kept), else None (the
    folder is cleared); `partial` exists afterwards."""
    progress = partial / PROGRESS_FILE
    saved: dict[str, Any] | None = None
    if progress.is_file():
        try:
            saved = json.loads(progress.read_text())
        except json.JSONDecodeError:
            saved = {}
        if saved.get("signature") != sig:
            saved = None
            shutil.rmtree(partial)
    elif partial.exists():
        shutil.rmtree(partial)  # a partial folder without a progress record has nothing to resume
    partial.mkdir(parents=True, exist_ok=True)
    return saved


def save_progress(partial: Path, sig: str, record: dict[str, Any]) -> None:
    """Record how far the files got (after they are synced)."""
    atomic.write_json(partial / PROGRESS_FILE, {"signature": sig, **record})


def publish(partial: Path, final: Path) -> None:
    """Drop the progress record and rename the complete partial folder onto `final`, atomically."""
    (partial / PROGRESS_FILE).unlink()
    with atomic.atomic_path(final) as tmp:
        partial.rename(tmp)


class GrowingFiles:
    """Append-only files, each cut to the size the progress record gives it, with a running sha256."""

    def __init__(self, folder: Path, sizes: dict[str, tuple[str, int]]) -> None:
        """`sizes`: key -> (file name in `folder`, bytes already recorded)."""
        self.files: dict[str, Any] = {}
        self.hashes: dict[str, Any] = {}
        for key, (name, size) in sizes.items():
            path = folder / name
            f = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115 (closed in close())
            # Cut whatever a killed run wrote after its last recorded shard, then re-hash the kept part.
            f.truncate(size)
            f.seek(0)
            h = hashlib.sha256()
            for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                h.update(chunk)
            if f.tell() != size:
                raise StageError(f"{path}: shorter than {PROGRESS_FILE} records; delete {folder} and re-run")
            self.files[key], self.hashes[key] = f, h

    def write(self, key: str, data: bytes) -> None:
        self.files[key].write(data)
        self.hashes[key].update(data)

    def sha256(self, key: str) -> str:
        return self.hashes[key].hexdigest()

    def sync(self) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        for f in self.files.values():
            f.close()
