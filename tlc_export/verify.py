"""`tlc verify RUN_DIR`: every recorded file of a run (or a sweep: its stage store, points and report) checked
against its stage's checksums.json — ok, missing, corrupt, or unrecorded (in a stage folder, not in its record)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tlc_export import integrity
from tlc_export.rundir import RunDir, stale_inputs
from tlc_export.tasks import stage_names


@dataclass
class FolderCheck:
    """One stage folder's verdict."""

    label: str  # the stage, or `stages/<stage>/<key>` for a sweep's store entry
    stage: str
    folder: Path
    status: str  # the run's record: done, running, failed, stale
    run_root: Path  # whose command rebuilds it
    recorded: bool = True
    ok: int = 0
    bytes: int = 0
    faults: list[tuple[str, Path, str]] = field(default_factory=list)  # (kind, path, detail)

    def count(self, kind: str) -> int:
        return sum(1 for k, _, _ in self.faults if k == kind)


def folders_of(root: Path) -> list[FolderCheck]:
    """What to check, in pipeline order."""
    from tlc_export.sweep.run import is_sweep_dir

    if is_sweep_dir(root):
        return _sweep_folders(root)
    rd = RunDir(root)
    records = rd.records()
    out, stale = [], set()
    order = stage_names()
    for name in [*order, *(n for n in records if n not in order)]:
        rec = records.get(name)
        if rec is None:
            continue
        status = rec.status
        if status == "done" and stale_inputs(rec, records, stale):
            stale.add(name)
            status = "stale"
        out.append(FolderCheck(name, name, rd.stage_dir(name), status, root))
    if (root / "package" / "export" / integrity.RECORD_FILE).is_file():
        out.append(FolderCheck("package/export", "package", root / "package" / "export", "done", root))
    return out


def _sweep_folders(parent: Path) -> list[FolderCheck]:
    from tlc_export.store import STORE_DIR

    out = []
    store = parent / STORE_DIR
    order = {n: i for i, n in enumerate(stage_names())}
    for stage_dir in sorted((p for p in store.iterdir() if p.is_dir()), key=lambda p: (order.get(p.name, 99), p.name)) \
            if store.is_dir() else []:
        for rec_path in sorted(stage_dir.glob("*.json")):
            try:
                rec = json.loads(rec_path.read_text())
            except (OSError, json.JSONDecodeError):
                rec = {}
            entry = stage_dir / rec_path.stem
            built_by = rec.get("built_by")
            point_root = parent / "points" / built_by if built_by else parent
            out.append(FolderCheck(f"{STORE_DIR}/{stage_dir.name}/{rec_path.stem[:10]}", stage_dir.name, entry,
                                   str(rec.get("status", "?")), point_root))
    if (parent / "report").is_dir():
        out.append(FolderCheck("report (sweep)", "report", parent / "report", "done", parent))
    return out


def check_folder(fc: FolderCheck, on_bytes: Callable[[int], None] | None = None) -> None:
    """Fill `fc` (only finished stages are checked: a running one is still writing)."""
    if fc.status not in ("done", "stale"):
        return
    rec = integrity.read_record(fc.folder)
    present = set(integrity.list_files(fc.folder)) if fc.folder.is_dir() else set()
    if rec is None or rec.get("unreadable"):
        fc.recorded = False
        why = ("no checksums.json: written before tlc recorded checksums" if rec is None
               else "checksums.json is unreadable")
        for rel in sorted(present):
            fc.faults.append(("unrecorded", fc.folder / rel, why))
        if rec is not None:
            fc.faults.append(("corrupt", fc.folder / integrity.RECORD_FILE, why))
        return
    files = rec["files"]
    for rel, want in files.items():
        bad = integrity.check_file(fc.folder / rel, want, on_bytes=on_bytes)
        if bad is None:
            fc.ok += 1
            fc.bytes += int(want["bytes"])
        else:
            fc.faults.append((bad[0], fc.folder / rel, bad[1]))
    for rel in sorted(present - set(files)):
        fc.faults.append(("unrecorded", fc.folder / rel, "not in the stage's record: added after it finished"))


def verify_run(root: Path, on_bytes: Callable[[int], None] | None = None,
               folders: list[FolderCheck] | None = None) -> list[FolderCheck]:
    folders = folders_of(root) if folders is None else folders
    for fc in folders:
        check_folder(fc, on_bytes)
    return folders


def recorded_bytes(folders: list[FolderCheck]) -> int:
    total = 0
    for fc in folders:
        if fc.status in ("done", "stale"):
            rec = integrity.read_record(fc.folder)
            if rec is not None:
                total += sum(int(f.get("bytes", 0)) for f in rec["files"].values())
    return total


def earliest_fault(folders: list[FolderCheck]) -> FolderCheck | None:
    order = {n: i for i, n in enumerate(stage_names())}
    faulty = [fc for fc in folders if fc.faults]
    return min(faulty, key=lambda fc: order.get(fc.stage, len(order))) if faulty else None
