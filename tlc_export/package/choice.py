"""What every family's `tlc package` shares: the run directory it reads and the `Choice` it ships."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlc_export.errors import TlcError
from tlc_export.rundir import RESOLVED_RECIPE, RunDir

if TYPE_CHECKING:
    from tlc_export.recipe import Recipe

# The export format that carries a compress variant's own weights, by bit width (b6 travels in INT8).
OWN_FORMAT = {32: "onnx-fp32", 8: "onnx-int8", 6: "onnx-int8", 4: "onnx-int4"}
ONNX_RUNTIME_BACKEND = "onnxruntime"
TENSORRT_BACKEND = "tensorrt"


class PackageError(TlcError):
    """`tlc package` cannot do what was asked; the message says why and what to pass instead."""


@dataclass
class Choice:
    """The (variant, format) to ship, its rows from every stage, and why it was chosen."""

    variant: str
    format: str
    export: dict[str, Any] | None  # None: not exported yet (dry run of a pair `tlc package` would export)
    compress: dict[str, Any] | None
    bench: list[dict[str, Any]] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)

    @property
    def is_engine(self) -> bool:
        return self.format.startswith("tensorrt")


def check_run_dir(run_dir: str | Path) -> RunDir:
    """A run directory: the folder, its manifest and its resolved recipe exist."""
    rd = RunDir(run_dir)
    root = rd.root
    if not root.is_dir():
        raise PackageError(f"{root}: no such run directory; pass the folder `tlc run` wrote (e.g. runs/quickstart)")
    if not rd.exists() or not (root / RESOLVED_RECIPE).is_file():
        raise PackageError(f"{root}: not a run directory (no manifest.json / {RESOLVED_RECIPE}); start one with `tlc run RECIPE`")
    return rd


def run_recipe(run_dir: str | Path) -> Recipe:
    """The run's resolved recipe (relative paths resolved against the original recipe's folder)."""
    from tlc_export.recipe import parse_recipe

    rd = check_run_dir(run_dir)
    resolved = rd.root / RESOLVED_RECIPE
    base = rd.load_manifest().get("recipe_base_dir")
    return parse_recipe(resolved.read_text(), file=str(resolved), base_dir=Path(base) if base else rd.root)


def check_selection(variant: str | None, fmt: str | None, max_storage_mb: float | None, max_latency_ms: float | None,
                    backend: str | None, batch: int | None, *, latency_usage: str, format_note: str = "") -> None:
    """Exactly one way of choosing (--variant, --max-storage-mb, --max-latency-ms), and only the options that
    go with it; `latency_usage` spells the latency form, `format_note` ends the --format message."""
    modes = [m for m, v in (("--variant", variant), ("--max-storage-mb", max_storage_mb),
                            ("--max-latency-ms", max_latency_ms)) if v is not None]
    if len(modes) != 1:
        raise PackageError("choose what to ship with exactly one of --variant V [--format F], --max-storage-mb X, "
                           f"{latency_usage} (got {', '.join(modes) or 'none'})")
    if (backend is not None or batch is not None) and max_latency_ms is None:
        raise PackageError("--backend and --batch choose among latency rows; use them with --max-latency-ms")
    if fmt is not None and max_latency_ms is not None:
        raise PackageError(f"--format does not apply to --max-latency-ms: the latency answer names its format{format_note}")
