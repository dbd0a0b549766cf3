"""Which split does which job, and the accuracy fields every scored model's result row carries.

Dev selects: finetune checkpoints, the (lr, seed) of each size, when pruning recovery stops, and which
variant an answer names. Test reports: every accuracy the verdict, the Pareto frontier, the answer
tables and the plots show. Selection code never receives the test split; the report shows dev beside
test so the gap is visible.

`accuracy_fields(predictions)` turns one model's per-example predictions into the row fields the
finetune and compress stages record (and the export stage, for files that are models of their own):

- `<split>_accuracy`, `<split>_accuracy_ci` ([low, high], Wilson 95 %), `<split>_n` for every split;
- `majority_accuracy`, `majority_label`: always answering the report split's most frequent label;
- `learned_task`: the model is significantly above that constant answer on the report split
  (exact McNemar, `stats.above_majority`); `above_majority_p` its p-value. False means "did not
  learn the task".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tlc_export import stats
from tlc_export.predictions import SplitPredictions

SELECTION_SPLIT = "dev"
REPORT_SPLIT = "test"
SPLITS = (SELECTION_SPLIT, REPORT_SPLIT)


def accuracy_fields(predictions: Mapping[str, SplitPredictions], report_split: str = REPORT_SPLIT) -> dict[str, Any]:
    """Row fields (see the module docstring) from `{split: SplitPredictions}`."""
    out: dict[str, Any] = {}
    for split, sp in predictions.items():
        acc = stats.accuracy_interval(sp.correct)
        out[f"{split}_accuracy"] = acc.accuracy
        out[f"{split}_accuracy_ci"] = [acc.ci_low, acc.ci_high]
        out[f"{split}_n"] = acc.n
    rep = predictions.get(report_split)
    if rep is not None:
        maj = stats.majority_baseline(rep.labels)
        vs = stats.above_majority(rep.predicted, rep.labels)
        out.update(majority_accuracy=maj.accuracy, majority_label=maj.label,
                   learned_task=vs.outcome == "won", above_majority_p=vs.p_value)
    return out


def majority_fields(labels_by_split: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`{split: {label, accuracy, n}}` of the majority baseline of every split."""
    return {s: stats.majority_baseline(labels).to_dict() for s, labels in labels_by_split.items()}


def pct_ci(row: Mapping[str, Any], split: str) -> str:
    """`63.1 % [58.9, 67.1]` from a row's `<split>_accuracy` and `<split>_accuracy_ci` (or `-`)."""
    acc = row.get(f"{split}_accuracy")
    if acc is None:
        return "-"
    ci = row.get(f"{split}_accuracy_ci")
    if not ci:
        return f"{100 * acc:.1f} %"
    return f"{100 * acc:.1f} % [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
