"""`tlc plan`: pilot every size, fit and extrapolate, measure compression, storage and latency, recommend.

The pilots live in a run directory (`<out>/run`): `run/data` (the data stage, run by the caller) and
`run/pretrain/<size>/state/`, the state a full run of the same recipe resumes. `recipe.plan.yaml` is
that recipe (budget T, the pilot's evaluation interval) restricted to the recommended size(s), so
`tlc run <out>/recipe.plan.yaml --run-dir <out>/run` continues the pilots instead of starting over.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from tlc_export import atomic
from tlc_export.plan.choose import MB, Candidate, PlanError, recommend
from tlc_export.plan.fit import fit_curve, schedule_area
from tlc_export.report.plan_check import PLAN_FORMAT
from tlc_export.rundir import PLAN_META, RunDir

MIN_EVAL_INTERVAL_S = 0.5  # shorter evaluation intervals are mostly evaluation overhead on small models
FIGURE8 = ("Compression penalties are measured on the pilot checkpoint (one-shot magnitude pruning, no recovery "
           "training; the recipe's quantization grid) and carried over to the final model unchanged: the paper's "
           "Figure 8 finding that compressibility barely depends on how far pretraining converged. This is an "
           "assumption; `tlc plan --check` measures it.")


@dataclass
class PlanOptions:
    budget_s: float
    pilot_fraction: float = 0.1
    pilot_evals: int = 10
    max_storage_mb: float | None = None
    max_latency_ms: float | None = None
    backend: str = "onnxruntime"
    latency_batch: int | None = None
    level: float = 0.9


def check_options(opts: PlanOptions, recipe: Any) -> None:
    """Bad budgets and limits, each named with the fix (before anything runs)."""
    if not (opts.budget_s > 0 and math.isfinite(opts.budget_s)):
        raise PlanError(f"--budget-s {opts.budget_s:g}: the training budget per size must be a positive number of seconds")
    if not 0 < opts.pilot_fraction <= 0.5:
        raise PlanError(f"--pilot-fraction {opts.pilot_fraction:g}: must be in (0, 0.5]; a pilot is the first fraction "
                        "of the run (default 0.1)")
    if opts.pilot_evals < 5:
        raise PlanError(f"--pilot-evals {opts.pilot_evals}: a fit needs at least 5 evaluation points; use 5 or more")
    pilot = opts.pilot_fraction * opts.budget_s
    need = opts.pilot_evals * MIN_EVAL_INTERVAL_S
    if pilot < need:
        raise PlanError(
            f"--budget-s {opts.budget_s:g}: a {opts.pilot_fraction:.0%} pilot is {pilot:.3g} s, shorter than the "
            f"{need:g} s a pilot needs ({opts.pilot_evals} evaluations at least {MIN_EVAL_INTERVAL_S:g} s apart); raise "
            f"--budget-s to at least {need / opts.pilot_fraction:.4g} (+{need / opts.pilot_fraction - opts.budget_s:.4g} s)"
            + (f" or --pilot-fraction to at least {need / opts.budget_s:.3g}" if need / opts.budget_s <= 0.5 else ""))
    for flag, v in (("--max-storage-mb", opts.max_storage_mb), ("--max-latency-ms", opts.max_latency_ms)):
        if v is not None and not v > 0:
            raise PlanError(f"{flag} {v:g}: a limit must be positive (leave it out for no limit)")
    if recipe.translation is not None or recipe.models is None or recipe.pretrain is None:
        raise PlanError("tlc plan pilots masked-LM pretraining: the recipe needs `models` and `pretrain` sections "
                        "(translation recipes are not supported yet)")
    sizes = recipe.bench.batch_sizes if recipe.bench is not None else [1]
    if opts.latency_batch is not None and opts.latency_batch not in sizes:
        raise PlanError(f"--latency-batch {opts.latency_batch}: not among bench.batch_sizes {sizes}; use one of them")


def plan_recipe(recipe: Any, opts: PlanOptions, sizes: list[str] | None = None) -> Any:
    """The full run's recipe: budget T, evaluation every pilot/pilot_evals seconds, optionally fewer sizes."""
    d = recipe.model_dump(mode="json", by_alias=True)
    d["pretrain"]["time_budget_s"] = opts.budget_s
    d["pretrain"]["eval_every_s"] = opts.pilot_fraction * opts.budget_s / opts.pilot_evals
    d["pretrain"]["eval_every_steps"] = None
    if sizes is not None:
        d["models"]["sizes"] = [s for s in d["models"]["sizes"] if _size_name(s) in sizes]
    _absolute_paths(d, recipe.base_dir)
    from tlc_export.recipe import parse_recipe

    return parse_recipe(yaml.safe_dump(d, sort_keys=False), file="recipe.plan.yaml", base_dir=recipe.base_dir)


def _absolute_paths(node: Any, base: Path) -> None:
    """Relative `path` fields made absolute, so recipe.plan.yaml (written elsewhere) reads the same files; the
    pilots' data stage uses the same absolute form, so the full run finds it up to date."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "path" and isinstance(v, str) and v and not Path(v).expanduser().is_absolute():
                node[k] = str((Path(base) / v).resolve())
            else:
                _absolute_paths(v, base)
    elif isinstance(node, list):
        for v in node:
            _absolute_paths(v, base)


def _size_name(s: dict[str, Any]) -> str:
    return f"{s['layers']}L-{s['hidden']}H"


class _PeakRSS:
    """Peak resident memory of this process, sampled after every step (bytes)."""

    def __init__(self) -> None:
        self.peak = self.read()

    @staticmethod
    def read() -> int:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
            return pages * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def __call__(self, _counters: Any) -> None:
        self.peak = max(self.peak, self.read())


def make_plan(recipe: Any, run_dir: Path, out: Path, opts: PlanOptions, console: Console | None = None) -> dict[str, Any]:
    """Pilot, fit, probe, recommend; write plan.json, the plot, recipe.plan.yaml; return the plan."""
    import torch
    from safetensors.torch import load_model

    from tlc_export.compress.mlm_penalty import compression_penalties
    from tlc_export.models import build_mlm
    from tlc_export.plan.probe import artifact_storage, classifier_from_mlm, latency
    from tlc_export.pretrain.evaluate import fixed_val_batches
    from tlc_export.pretrain.loop import CURVES_FILE, pretrain_size
    from tlc_export.pretrain.schedule import lr_at
    from tlc_export.tasks.classification.stages.pretrain import load_pretrain_data

    console = console or Console(quiet=True)
    check_options(opts, recipe)
    full = plan_recipe(recipe, opts)
    pc = full.pretrain
    T, pilot_s = opts.budget_s, opts.pilot_fraction * opts.budget_s
    data = load_pretrain_data(run_dir / "data", recipe.data.max_seq_len, recipe.data.mlm_probability, recipe.data.fraction)
    sample = data.validation_sample(pc)
    val = fixed_val_batches(data.val_rows, sample.indices, sample.batch_size, data.mask_spec(), pc.seed)
    num_labels = _num_labels(recipe)
    bench = recipe.bench
    batch_sizes = list(bench.batch_sizes) if bench is not None else [1]
    seq_len = bench.seq_len if bench is not None else recipe.data.max_seq_len
    lat_batch = opts.latency_batch or min(batch_sizes)

    def lr(t: float) -> float:
        return lr_at(t, T, pc.lr, pc.warmup_fraction)

    x_star = float(schedule_area(lr, pc.lr, np.array([T]))[0])
    sizes: list[dict[str, Any]] = []
    candidates: list[Candidate] = []
    pilot_wall = 0.0
    for size in full.models.grid():
        folder = run_dir / "pretrain" / size.name
        rss = _PeakRSS()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        row = pretrain_size(size, pc, data, folder, dropout=recipe.models.dropout, console=console, on_step=rss,
                            stop_at_s=pilot_s)
        wall = time.perf_counter() - t0
        pilot_wall += wall
        if not row.get("pilot"):
            raise PlanError(f"{folder}: this size already finished its full run; plan into a fresh --out")
        curve = atomic.read_jsonl(folder / CURVES_FILE)
        pts = [p for p in curve if p["elapsed_s"] > 0]
        t = np.array([p["elapsed_s"] for p in pts])
        y = np.array([p["val_loss"] for p in pts])
        fit = fit_curve(schedule_area(lr, pc.lr, t), y, x_star, level=opts.level)
        mlm = build_mlm(size, vocab_size=len(data.tokenizer), max_seq_len=data.seq_len, dropout=0.0,
                        pad_id=int(data.tokenizer.pad_token_id), bos_id=int(data.tokenizer.bos_token_id),
                        eos_id=int(data.tokenizer.eos_token_id))
        load_model(mlm, str(folder / "state" / "model.safetensors"), strict=False)
        mlm.eval()
        penalties = compression_penalties(mlm, recipe.compress, val, micro_batch_size=row["micro_batch_size"])
        clf = classifier_from_mlm(mlm, num_labels)
        storage = artifact_storage(clf, recipe.compress, size.name, out / "artifacts" / size.name)
        lat = latency(clf, batch_sizes, seq_len, out / "latency" / size.name, backend=opts.backend,
                      warmup=bench.warmup if bench else 2, runs=bench.runs if bench else 5,
                      threads=bench.threads if bench else None)
        mem = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else rss.peak
        entry = {
            "size": size.name, "params": row["params"], "pilot": {**row, "wall_s": wall, "curve_points": len(curve)},
            "tokens_per_s": row["tokens_per_s"], "steps_per_s": row["steps_per_s"],
            "peak_memory_bytes": int(mem), "peak_memory_kind": "cuda max allocated" if torch.cuda.is_available()
            else "process resident set (sampled each step)",
            "curve": [{"elapsed_s": p["elapsed_s"], "step": p["step"], "tokens": p["tokens"], "val_loss": p["val_loss"]}
                      for p in curve],
            "predicted_final_loss": fit.predicted, "interval": list(fit.interval), "level": opts.level,
            "predicted_tokens": row["tokens_per_s"] * T, "fit": fit.to_dict(), "trustworthy": fit.trustworthy,
            "untrustworthy_reasons": fit.reasons, "compression": {},
            "latency_ms": lat, "latency_backend": opts.backend,
        }
        for key, p in penalties.items():
            s = storage[key]
            entry["compression"][key] = {**p, "storage_bytes": s["storage_bytes"], "artifact": s["artifact"],
                                         "predicted_loss": fit.predicted + p["penalty"]}
            candidates.append(Candidate(size.name, key, f"{size.name}.{key}", fit.predicted + p["penalty"],
                                        (fit.interval[0] + p["penalty"], fit.interval[1] + p["penalty"]),
                                        p["penalty"], s["storage_bytes"], lat[str(lat_batch)]["p50_ms"], fit.trustworthy))
        sizes.append(entry)
        console.print(f"[green]{size.name}[/green]: pilot {row['elapsed_s']:.1f}s of {T:g}s, "
                      f"{len(pts)} points, predicted final loss {fit.predicted:.3f} "
                      f"[{fit.interval[0]:.3f}, {fit.interval[1]:.3f}]" + ("" if fit.trustworthy else " (untrustworthy)"))

    rec = recommend(candidates, opts.max_storage_mb, opts.max_latency_ms)
    chosen = [rec.best.size] + ([rec.runner_up.size] if rec.runner_up is not None and not rec.distinguishable else [])
    grid = len(sizes)
    plan = {
        "format": PLAN_FORMAT, "recipe": recipe.name, "budget_s": T, "pilot_fraction": opts.pilot_fraction,
        "pilot_s": pilot_s, "eval_every_s": pc.eval_every_s, "level": opts.level,
        "limits": {"max_storage_mb": opts.max_storage_mb, "max_latency_ms": opts.max_latency_ms,
                   "backend": opts.backend, "latency_batch": lat_batch},
        "fit": {"model": "L = E + A·x^(-α), x = ∫lr dt / peak lr (seconds at peak lr) under the recipe's schedule",
                "x_at_budget": x_star, "interval": "posterior predictive of the measured final validation loss "
                "(flat priors on E, A, log σ; α on a grid, integrated out)"},
        "figure8_assumption": FIGURE8,
        "cost": {"pilot_training_s": sum(s["pilot"]["elapsed_s"] for s in sizes), "pilot_wall_s": pilot_wall,
                 "grid_training_s": grid * T, "fraction_of_grid": sum(s["pilot"]["elapsed_s"] for s in sizes) / (grid * T),
                 "note": "pilot_wall_s includes evaluation, compression probes are not in it; the full run resumes the "
                         "recommended pilots, so their seconds are not lost"},
        "sizes": sizes, "recommendation": rec.to_dict(), "recipe_plan": "recipe.plan.yaml", "run_dir": str(run_dir),
        "plot": "extrapolation.png", "device": sizes[0]["pilot"]["device"] if sizes else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    final = plan_recipe(recipe, opts, sizes=chosen)
    atomic.write_text(out / "recipe.plan.yaml",
                      f"# tlc plan: the full run of {', '.join(chosen)}, resuming the pilots in {run_dir}\n"
                      f"# run it with: tlc run {out / 'recipe.plan.yaml'} --run-dir {run_dir}\n" + final.resolved_yaml())
    plot_plan(plan, lr, pc.lr, out / "extrapolation.png")
    atomic.write_json(out / "plan.json", plan)
    # The run directory names its plan (relative: the plan folder may move as a whole), so the report of the full
    # run made from recipe.plan.yaml shows the plan against it.
    RunDir(run_dir).set_meta(**{PLAN_META: os.path.relpath(out / "plan.json", run_dir)})
    console.print(plan_table(plan))
    return plan


def _num_labels(recipe: Any) -> int:
    """The deployed classifier's label count (storage counts its head)."""
    if recipe.finetune is None:
        return 2
    from tlc_export.data.task import load_task

    return int(load_task(recipe.finetune.task, recipe).num_labels)


def plot_plan(plan: dict[str, Any], lr: Any, peak: float, path: Path) -> None:
    """Pilot points and each size's extrapolated curve (median) with the interval at the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    T = plan["budget_s"]
    ts = np.linspace(T * 0.02, T, 200)
    xs = schedule_area(lr, peak, ts)
    for i, s in enumerate(plan["sizes"]):
        c = f"C{i}"
        pts = [p for p in s["curve"] if p["elapsed_s"] > 0]
        ax.plot([p["elapsed_s"] for p in pts], [p["val_loss"] for p in pts], "o", color=c, ms=3, label=f"{s['size']} pilot")
        f = s["fit"]
        if math.isfinite(f["E"]):
            ax.plot(ts, f["E"] + f["A"] * xs ** (-f["alpha"]), "-", color=c, lw=1,
                    alpha=1.0 if s["trustworthy"] else 0.4)
            lo, hi = s["interval"]
            ax.errorbar([T], [s["predicted_final_loss"]], yerr=[[s["predicted_final_loss"] - lo], [hi - s["predicted_final_loss"]]],
                        fmt="s", color=c, capsize=4)
    ax.axvline(plan["pilot_s"], color="grey", ls=":", lw=1)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("validation loss (masked LM)")
    ax.set_title(f"tlc plan: pilots ({plan['pilot_fraction']:.0%}) extrapolated to {T:g} s, {plan['level']:.0%} intervals")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plan_table(plan: dict[str, Any]) -> Table:
    rec = plan["recommendation"]
    lim = plan["limits"]
    t = Table(title=f"tlc plan: {plan['recipe']}, {plan['budget_s']:g} s per size, pilots {plan['pilot_fraction']:.0%} "
                    f"({plan['cost']['fraction_of_grid']:.0%} of the grid's training time)")
    for col in ("size", "tok/s", "peak MB", "pilot pts", f"final loss ({plan['level']:.0%})", "best variant in limits",
                "its loss", "storage MB", f"latency ms (b{lim['latency_batch']})", "trust"):
        t.add_column(col)
    from tlc_export.plan.choose import within

    for s in plan["sizes"]:
        fit_ok = [(k, c) for k, c in s["compression"].items()
                  if within(Candidate(s["size"], k, "", 0, (0, 0), 0, c["storage_bytes"],
                                      s["latency_ms"][str(lim["latency_batch"])]["p50_ms"], True),
                            lim["max_storage_mb"], lim["max_latency_ms"])]
        best = min(fit_ok, key=lambda kc: kc[1]["predicted_loss"]) if fit_ok else None
        lo, hi = s["interval"]
        t.add_row(s["size"], f"{s['tokens_per_s']:,.0f}", f"{s['peak_memory_bytes'] / MB:,.0f}", str(len(s["curve"])),
                  f"{s['predicted_final_loss']:.3f} [{lo:.3f}, {hi:.3f}]",
                  best[0] if best else "none", f"{best[1]['predicted_loss']:.3f}" if best else "-",
                  f"{best[1]['storage_bytes'] / MB:.2f}" if best else "-",
                  f"{s['latency_ms'][str(lim['latency_batch'])]['p50_ms']:.2f}",
                  "yes" if s["trustworthy"] else "no: " + "; ".join(r.split(":")[0] for r in s["untrustworthy_reasons"]))
    t.caption = (f"recommended: {rec['best']['variant']} (predicted {rec['best']['predicted_loss']:.3f}); "
                 + (f"runner-up {rec['runner_up']['variant']} ({rec['runner_up']['predicted_loss']:.3f}); " if rec["runner_up"] else "")
                 + rec["note"])
    return t


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)
