"""The reproduction card: the paper's five claims checked on a run, each with measured evidence, a
95 % interval, the figure it mirrors, the numbers it used and the rule that decided its status.

Written by the report stage to report/claims.json and shown at the top of index.html and
summary.md; printed at the end of `tlc run`; compared across runs by `tlc report --compare`.
The decision rules live in `claims.rules`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tlc_export import atomic
from tlc_export.report.claims.build import build_card
from tlc_export.report.claims.card import Card, Claim, Part
from tlc_export.report.claims.compare import card_for_run, compare_cards, compare_runs
from tlc_export.report.claims.render import card_html, card_markdown, card_table, compare_table
from tlc_export.report.claims.rules import FAILS, HOLDS, NOISE, NOT_MEASURED, STATUSES

CARD_FILE = "claims.json"

__all__ = [
    "CARD_FILE", "FAILS", "HOLDS", "NOISE", "NOT_MEASURED", "STATUSES", "Card", "Claim", "Part", "build_card",
    "card_for_run", "card_html", "card_markdown", "card_table", "compare_cards", "compare_runs", "compare_table",
    "read_card", "write_card",
]


def write_card(card: Card, report_dir: str | Path) -> Path:
    path = Path(report_dir) / CARD_FILE
    atomic.write_json(path, card.to_dict())
    return path


def read_card(report_dir: str | Path) -> Card | None:
    """The card a report wrote, or None when that report predates the card."""
    path = Path(report_dir) / CARD_FILE
    if not path.is_file():
        return None
    return Card.from_dict(json.loads(path.read_text()))
