"""Several runs' cards side by side (two budgets, two seeds …); a claim that flips is unstable."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlc_export.errors import TlcError
from tlc_export.report.claims.build import build_card
from tlc_export.report.claims.card import Card
from tlc_export.report.claims.render import interval_text
from tlc_export.report.claims.rules import STABILITY_RULE, stability
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
        import json

        name = json.loads(manifest.read_text()).get("recipe_name") or name
    return build_card(load_report_data(root, name=name))


def _labels(paths: Sequence[Path]) -> list[str]:
    """Short, distinct column labels: the folder names, or more of the path where they clash."""
    labels = [p.name or str(p) for p in paths]
    if len(set(labels)) == len(labels):
        return labels
    return [str(p) for p in paths]


def compare_cards(cards: Sequence[Card], labels: Sequence[str]) -> dict[str, Any]:
    """JSON-able comparison: per claim, every run's status and d, and whether the status is stable."""
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
        rows.append({"number": n, "claim": first.claim, "figure": first.figure, "runs": cells,
                     "stability": stability(statuses)})
    return {"runs": [{"label": lab, "run": card.run, "run_dir": card.run_dir} for lab, card in zip(labels, cards, strict=True)],
            "claims": rows, "rule": STABILITY_RULE,
            "unstable": [r["number"] for r in rows if r["stability"] == "unstable"]}


def compare_runs(run_dirs: Sequence[str | Path]) -> dict[str, Any]:
    if len(run_dirs) < 2:
        raise TlcError("--compare needs at least two run directories")
    paths = [Path(p) for p in run_dirs]
    return compare_cards([card_for_run(p) for p in paths], _labels(paths))
