"""Several runs' cards side by side (two budgets, two seeds …); a claim that flips is unstable.

Runs that are replicates (the same recipe but for the pretraining seed) are also pooled the way
`pretrain.seeds` pools the seeds of one run: claims 1 and 2 take their interval over every seed of
every run (`pooled_claims`). Runs that differ in anything else are not pooled: their difference
would be read as seed noise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlc_export.errors import TlcError
from tlc_export.report.claims.build import build_card, replica_curves, run_curves
from tlc_export.report.claims.card import Card, Claim
from tlc_export.report.claims.curves import claim_steps, claim_wallclock
from tlc_export.report.claims.render import interval_text
from tlc_export.report.claims.rules import STABILITY_RULE, stability
from tlc_export.report.claims.sizes import order_sizes
from tlc_export.report.data import load_report_data


def card_for_run(run_dir: str | Path) -> Card:
    """The card of a run directory, computed now from its results with this version's rules.

    Recomputing (rather than reading each run's report/claims.json) makes every run of a
    comparison decided by the same rules, whatever tlc version reported it.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise TlcError(f"{root}: no such run directory; pass run directories made by `tlc run`")
    if not any((root / s).is_dir() for s in ("pretrain", "compress")):
        raise TlcError(f"{root}: not a run directory with results (no pretrain/ or compress/ folder); "
                       "pass a directory made by `tlc run`")
    name = root.name
    manifest = root / "manifest.json"
    if manifest.is_file():
        name = json.loads(manifest.read_text()).get("recipe_name") or name
    return build_card(load_report_data(root, name=name))


def _labels(paths: Sequence[Path]) -> list[str]:
    """Short, distinct column labels: the folder names, or more of the path where they clash."""
    labels = [p.name or str(p) for p in paths]
    if len(set(labels)) == len(labels):
        return labels
    return [str(p) for p in paths]


POOLED_SECTIONS = ("models", "pretrain", "data", "tokenizer")  # what must agree for runs to be seed replicates


def _recipe(root: Path) -> dict[str, Any] | None:
    import yaml

    from tlc_export.rundir import RESOLVED_RECIPE

    path = root / RESOLVED_RECIPE
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def _seeds(recipe: dict[str, Any]) -> list[int]:
    pre = recipe.get("pretrain") or {}
    return [int(x) for x in pre.get("seeds") or [pre.get("seed", 0)]]


def _without_seed(recipe: dict[str, Any]) -> str:
    out = {k: recipe.get(k) for k in POOLED_SECTIONS}
    out["pretrain"] = {k: v for k, v in (out.get("pretrain") or {}).items() if k not in ("seed", "seeds")}
    return json.dumps(out, sort_keys=True, default=str)


def pooled_claims(run_dirs: Sequence[str | Path]) -> tuple[list[Claim], str | None]:
    """Claims 1 and 2 over every pretraining seed of every run, or ([], why the runs cannot be pooled)."""
    paths = [Path(p) for p in run_dirs]
    recipes = [_recipe(p) for p in paths]
    if any(r is None for r in recipes):
        return [], "a run has no recipe.resolved.yaml, so it cannot be checked to be a seed replicate of the others"
    if len({_without_seed(r) for r in recipes if r is not None}) > 1:
        return [], ("the runs differ in more than the pretraining seed (models, pretrain, data or tokenizer), so they "
                    "are not replicates: each is decided on its own")
    seeds = [s for r in recipes if r is not None for s in _seeds(r)]
    if len(set(seeds)) < len(seeds):
        return [], (f"the runs share pretraining seeds ({', '.join(map(str, seeds))}), so they are not independent "
                    "replicates; give each run its own pretrain.seed")
    curves, budget, sizes = [], None, []
    for p in paths:
        data = load_report_data(p)
        curves += [run_curves(data)] + replica_curves(p / "pretrain")
        if not sizes:
            res = p / "pretrain" / "results.json"
            pre = json.loads(res.read_text()) if res.is_file() else {}
            budget = pre.get("time_budget_s")
            sizes = order_sizes(list(curves[0]), [r for r in pre.get("models", []) if isinstance(r, dict)])
    return [claim_wallclock(sizes, curves[0], budget, replicas=curves[1:]),
            claim_steps(sizes, curves[0], replicas=curves[1:])], None


def compare_cards(cards: Sequence[Card], labels: Sequence[str], pooled: Sequence[Claim] = (),
                  pooled_why: str | None = None) -> dict[str, Any]:
    """JSON-able comparison: per claim, every run's status and d, whether the status is stable, and the
    claim pooled over every run's seeds where the runs are replicates (`pooled_claims`)."""
    if len(cards) != len(labels):
        raise ValueError("one label per card")
    numbers = sorted({c.number for card in cards for c in card.claims})
    rows = []
    for n in numbers:
        per_run = [card.by_number().get(n) for card in cards]
        first = next(c for c in per_run if c is not None)
        cells = []
        for c in per_run:
            if c is None:
                cells.append({"status": "not measured", "status_text": "not measured (absent from this card)",
                              "d": "-", "estimate": None, "interval": None})
            else:
                cells.append({"status": c.status, "status_label": c.status_label, "status_text": c.status_text,
                              "d": interval_text(c), "estimate": c.estimate, "interval": c.interval, "seeds": c.seeds})
        statuses = [cell["status"] for cell in cells]
        pool = next((c for c in pooled if c.number == n), None)
        rows.append({"number": n, "claim": first.claim, "figure": first.figure, "runs": cells,
                     "stability": stability(statuses),
                     "pooled": None if pool is None else {
                         "status": pool.status, "status_label": pool.status_label, "status_text": pool.status_text,
                         "d": interval_text(pool), "estimate": pool.estimate, "interval": pool.interval,
                         "seeds": pool.seeds, "interval_method": pool.interval_method}})
    return {"runs": [{"label": lab, "run": card.run, "run_dir": card.run_dir} for lab, card in zip(labels, cards, strict=True)],
            "claims": rows, "rule": STABILITY_RULE,
            "pooled_note": pooled_why or (f"Claims 1 and 2 pooled over the {pooled[0].seeds} pretraining seeds of "
                                          "these runs (the same recipe but for the seed)." if pooled else None),
            "unstable": [r["number"] for r in rows if r["stability"] == "unstable"]}


def compare_runs(run_dirs: Sequence[str | Path]) -> dict[str, Any]:
    if len(run_dirs) < 2:
        raise TlcError("--compare needs at least two run directories")
    paths = [Path(p) for p in run_dirs]
    cards = [card_for_run(p) for p in paths]
    pooled, why = pooled_claims(paths)
    return compare_cards(cards, _labels(paths), pooled, why)
