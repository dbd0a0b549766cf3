"""Epochs of the training split seen by a size, and the warning when the budget repeats it too often.

Past a few epochs a masked LM starts to memorise its corpus: the paper (§5, Figure 14) shows the
larger models lose their advantage on 5 % of the data and fall behind on 1 %. A budget that will
cycle the training split more than `EPOCH_WARNING_THRESHOLD` times gets a warning naming the
corpus size and the projected epochs, in the console, in pretrain/results.json and in the report.
"""

from __future__ import annotations

EPOCH_WARNING_THRESHOLD = 4.0


def projected_epochs(epochs: float, elapsed_s: float, budget_s: float) -> float | None:
    """Epochs at the end of the budget at the throughput so far (None before any training time)."""
    if elapsed_s <= 0:
        return None
    return epochs * max(budget_s, elapsed_s) / elapsed_s


def epoch_warning(
    size: str, projected: float | None, train_tokens: int, train_rows: int, seq_len: int, budget_s: float,
    tokens_per_s: float,
) -> str | None:
    """The warning text when `projected` epochs exceed the threshold, else None."""
    if projected is None or projected <= EPOCH_WARNING_THRESHOLD:
        return None
    return (
        f"{size}: the training split holds {train_tokens:,} tokens ({train_rows:,} rows of {seq_len}); at "
        f"{tokens_per_s:,.0f} tokens/s the {budget_s:g} s budget sees about {projected:.1f} epochs, more than "
        f"{EPOCH_WARNING_THRESHOLD:g}. Repeating the corpus this often is the overfitting regime where larger "
        "models stop paying off (paper §5): add data sources or shorten pretrain.time_budget_s."
    )
