"""The learning rate as a function of elapsed *training seconds*, so every size ends at lr 0 on its budget."""

from __future__ import annotations


def lr_at(elapsed_s: float, budget_s: float, peak_lr: float, warmup_fraction: float) -> float:
    """Linear warm-up over `warmup_fraction` of the budget, then linear decay to 0 at the budget.

    Steps are not known in advance (each size runs as many as fit in the budget), so the schedule
    is driven by the clock instead of a step count.
    """
    if budget_s <= 0:
        raise ValueError(f"budget_s must be positive, got {budget_s}")
    t = min(max(elapsed_s, 0.0), budget_s)
    warmup = warmup_fraction * budget_s
    if warmup > 0 and t < warmup:
        # Never exactly 0 at t=0: the first step should move the weights.
        return peak_lr * max(t, 1e-3 * warmup) / warmup
    return peak_lr * (budget_s - t) / (budget_s - warmup)
