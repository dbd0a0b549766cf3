"""`tlc package`'s shared kit: a run's chosen variant as a self-contained serving bundle.

`choice` (the run directory read, the `Choice` shipped, `PackageError`), `out` (the `--out` folder, the
versions recorded), `readme`, `triton` and `gpu` are every family's; what a family ships and how it picks
it live in its folder (`tlc_export/tasks/<family>/package/`), reached through `TaskFamily.choose_bundle /
write_bundle` and the registry's `family_of_run`.
"""

from __future__ import annotations

from tlc_export.package.choice import Choice, PackageError, check_run_dir, run_recipe
from tlc_export.package.gpu import EngineGpuMismatch

__all__ = ["Choice", "EngineGpuMismatch", "PackageError", "check_run_dir", "run_recipe"]
