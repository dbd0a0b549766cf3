"""Intervals of validation-loss contrasts over a run's replicates: the validation batches of one
pretraining seed, or the pretraining seeds themselves (`pretrain.seeds`).

One seed: the contrast (e.g. largest − smallest size's loss) gets a t-interval over the validation
batches both models were scored on (`stats.ratio_contrast_t`); it says how precisely this seed's
models are measured, not how a rerun with another seed would come out, so a card from one seed
labels its decided statuses "one seed: indicative". Two seeds or more: each seed's contrast is one
unit and the interval is the t-interval of the per-seed contrasts (seeds − 1 degrees of freedom),
which carries both the seed-to-seed and the batch-to-batch variation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tlc_export.report.claims.rules import MIN_BATCHES
from tlc_export.stats import ratio_contrast_t, t_interval

BATCHES = "validation batches"
SEEDS = "pretraining seeds"
NO_BATCHES = "no per-batch validation losses"


@dataclass
class Term:
    """One model's final (or interpolated) validation loss in a contrast, with its per-batch sums."""

    sign: float
    loss: float
    sums: np.ndarray | None = None
    counts: np.ndarray | None = None
    label: str = ""

    def value(self) -> float:
        """The loss over all masked tokens (Σ sums / Σ counts when recorded, else the curve's loss)."""
        if math.isfinite(self.loss) and self.sums is not None and self.counts is not None and self.counts.sum() > 0:
            return float(self.sums.sum() / self.counts.sum())
        return self.loss


@dataclass
class Contrast:
    """Σ sign·loss over the terms, with its interval and what the interval is over."""

    estimate: float
    interval: tuple[float, float] | None
    units: int | None  # validation batches (one seed) or seeds behind the interval
    unit: str  # BATCHES or SEEDS
    seeds: int
    why_no_interval: str | None = None
    per_seed: list[float] = field(default_factory=list)


def _one_seed(terms: Sequence[Term], confidence: float) -> Contrast:
    est = sum(t.sign * t.value() for t in terms)
    if not all(math.isfinite(t.loss) for t in terms):
        return Contrast(est, None, None, BATCHES, 1, "a validation loss is not finite (did training diverge?)")
    if any(t.sums is None or t.counts is None for t in terms):
        return Contrast(est, None, None, BATCHES, 1, NO_BATCHES)
    first = terms[0]
    assert first.sums is not None and first.counts is not None
    for t in terms[1:]:
        assert t.sums is not None and t.counts is not None
        if t.sums.size != first.sums.size or not np.array_equal(t.counts, first.counts):
            return Contrast(est, None, None, BATCHES, 1,
                            f"{first.label or 'the models'} and {t.label or 'another model'} were scored on different "
                            f"validation batches ({first.sums.size} vs {t.sums.size}); give every point the same "
                            "pretrain.eval_batch_size, eval_batches and seed")
    n = int(first.sums.size)
    if n < MIN_BATCHES:
        return Contrast(est, None, n, BATCHES, 1, f"only {n} validation batches; an interval needs at least "
                        f"{MIN_BATCHES}: raise pretrain.eval_batches")
    d, lo, hi = ratio_contrast_t([(t.sign, t.sums, t.counts) for t in terms], confidence)  # type: ignore[misc]
    return Contrast(d, (lo, hi), n, BATCHES, 1, None, [d])


def contrast(replicates: Sequence[Sequence[Term]], confidence: float = 0.95) -> Contrast:
    """The contrast over seeds (≥ 2 replicates: t over per-seed values) or over one seed's batches."""
    if not replicates:
        raise ValueError("a contrast needs at least one replicate")
    if len(replicates) == 1:
        return _one_seed(replicates[0], confidence)
    per_seed = [sum(t.sign * t.value() for t in terms) for terms in replicates]
    s = len(per_seed)
    if not all(math.isfinite(x) for x in per_seed):
        return Contrast(float("nan"), None, s, SEEDS, s, "a seed's validation loss is not finite (did training diverge?)",
                        per_seed)
    est, lo, hi = t_interval(per_seed, confidence)
    return Contrast(est, (lo, hi), s, SEEDS, s, None, per_seed)


def interval_method(c: Contrast) -> str:
    if c.unit == SEEDS:
        return (f"t-interval over the {c.seeds} pretraining seeds' paired differences (each seed's models scored on the "
                f"same validation batches; {c.seeds - 1} degree{'s' if c.seeds > 2 else ''} of freedom), 95 %")
    return ("paired t-interval over the validation batches (each batch's share of the loss difference, both models "
            "scored on the same batches; n − 1 degrees of freedom), 95 %; one pretraining seed")
