"""The run directory: resolved recipe, manifest.json, and one folder per stage."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tlc_export import atomic

MANIFEST = "manifest.json"
PLAN_META = "plan"  # manifest key: the plan.json (relative to the run directory) of the `tlc plan` that made it
RESOLVED_RECIPE = "recipe.resolved.yaml"


@dataclass
class StageRecord:
    """What the manifest says about one stage."""

    name: str
    status: str = "pending"  # pending | running | done | failed
    cache_key: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    environment: dict[str, Any] | None = None  # versions and device the stage ran with
    # Sweep points only: the stage store entry this stage's folder links to, and whether it was a
    # cache hit (reused, built by another point or an earlier run) — {entry, hit, built_by}.
    shared: dict[str, Any] | None = None
    # The stage's files (`tlc_export.integrity`): {count, bytes, digest}; the listing is <stage>/checksums.json.
    files: dict[str, Any] | None = None
    # The `files.digest` of each input stage this run read: a later re-run of an input makes this stage stale.
    input_digests: dict[str, str] | None = None

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


def environment() -> dict[str, Any]:
    """Versions and device, recorded with every stage."""
    import importlib.metadata as md

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "numpy", "tlc-export"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    try:
        import torch

        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        env["torch_threads"] = torch.get_num_threads()
    except Exception:  # torch missing or CUDA probing failed: still record the rest
        env["device"] = "unknown"
    env["cpu"] = cpu_model()
    return env


def cpu_model() -> str:
    """The CPU's model name, for the record of where numbers came from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def stale_inputs(rec: StageRecord, records: dict[str, StageRecord], stale: set[str] | None = None) -> list[str]:
    """The inputs of a finished stage that changed since it read them (re-run, e.g. with `--force`), or are stale
    themselves (`stale`: the stages already found stale, walking in pipeline order). Records from before inputs
    were recorded are never stale."""
    if rec.input_digests is None:
        return []
    out = []
    for dep, digest in rec.input_digests.items():
        cur = records.get(dep)
        cur_digest = (cur.files or {}).get("digest") if cur is not None else None
        if (stale and dep in stale) or (cur_digest is not None and cur_digest != digest):
            out.append(dep)
    return out


class RunDir:
    """A run directory on disk. Only the runner writes the manifest; stages write their own folder.

    A sweep point's run directory has a stage store (`tlc_export.store`): its stage folders are
    links into the store, by cache key. `store` is given when the sub-run is created and recorded in
    its manifest (`stage_store`, relative), so later commands on the point find it again.
    """

    def __init__(self, root: str | Path, store: str | Path | None = None):
        self.root = Path(root)
        self._store = Path(store) if store is not None else None

    @property
    def store(self) -> Any:
        """The `StageStore` of a sweep point, else None."""
        from tlc_export.store import StageStore

        if self._store is None:
            rel = self.load_manifest().get("stage_store")
            if not rel:
                return None
            self._store = self.root / rel
        return StageStore(self._store)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def stage_dir(self, name: str) -> Path:
        return self.root / name

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def load_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"stages": {}}
        return json.loads(self.manifest_path.read_text())

    def records(self) -> dict[str, StageRecord]:
        m = self.load_manifest()
        return {k: StageRecord(**v) for k, v in m.get("stages", {}).items()}

    def record(self, name: str) -> StageRecord | None:
        return self.records().get(name)

    def save_record(self, rec: StageRecord) -> None:
        m = self.load_manifest()
        m.setdefault("stages", {})[rec.name] = asdict(rec)
        m["updated_at"] = time.time()
        atomic.write_json(self.manifest_path, m)

    def set_meta(self, **kw: Any) -> None:
        m = self.load_manifest()
        m.update(kw)
        atomic.write_json(self.manifest_path, m)

    def plan_file(self) -> Path | None:
        """The plan.json of the `tlc plan` that made this run directory (manifest `plan`, a path relative to the
        run directory, written by `planner.make_plan`); None for a run not made from a plan."""
        rel = self.load_manifest().get(PLAN_META)
        return self.root / rel if rel else None

    def plan_digest(self) -> str | None:
        """sha256 of `plan_file()` ("missing" when the manifest names a file that is gone); None without a plan.
        The report stage keys on it, so an edited plan never leaves a stale comparison in the report."""
        path = self.plan_file()
        if path is None:
            return None
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return "missing"

    def recipe(self) -> Any:
        """The run's recipe (`recipe.resolved.yaml`), relative paths resolved where the original recipe was."""
        from tlc_export.errors import TlcError
        from tlc_export.recipe import parse_recipe

        path = self.root / RESOLVED_RECIPE
        if not path.exists():
            raise TlcError(f"{self.root}: not a run directory (no {RESOLVED_RECIPE}); start one with `tlc run RECIPE`")
        base = self.load_manifest().get("recipe_base_dir")
        return parse_recipe(path.read_text(), file=str(path), base_dir=Path(base) if base else self.root)

    def reset_stage(self, name: str) -> None:
        """Remove a stage's folder (its config changed, so its partial work is invalid).

        A link into a stage store is only unlinked: the entry may serve other points.
        """
        d = self.stage_dir(name)
        if d.is_symlink():
            d.unlink()
        elif d.exists():
            shutil.rmtree(d)
