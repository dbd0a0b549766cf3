"""finetune.from: which pretrained checkpoint each size starts from, on constructed pretraining results."""

from __future__ import annotations

from typing import Any

import pytest

from tlc_export.errors import StageError
from tlc_export.finetune.checkpoints import candidates, finetune_targets, match_perplexity


def _row(size: str, final_ppl: float, kept: list[tuple[float, float]], budget: float = 100.0) -> dict[str, Any]:
    """A pretrain/results.json row: kept = [(fraction, val_ppl)], listed out of order on purpose."""
    return {
        "model": size, "elapsed_s": budget, "steps": 1000, "final_val_ppl": final_ppl, "final_val_loss": 0.0,
        "checkpoint": f"pretrain/{size}/checkpoint",
        "kept_checkpoints": [
            {"tag": f"k{round(100 * f)}", "fraction": f, "elapsed_s": f * budget, "step": int(1000 * f),
             "val_ppl": p, "val_loss": 0.0, "checkpoint": f"pretrain/{size}/kept/k{round(100 * f)}"}
            for f, p in sorted(kept, reverse=True)
        ] + [{"tag": "k100", "fraction": 1.0, "final": True, "val_ppl": final_ppl, "checkpoint": f"pretrain/{size}/checkpoint"}],
    }


ROWS = [
    _row("2L-64H", 50.0, [(0.25, 80.0), (0.5, 60.0)]),  # the worst final perplexity: the target is 50
    _row("4L-128H", 30.0, [(0.25, 55.0), (0.5, 45.0), (0.75, 35.0)]),  # first ≤ 50: the 50 % checkpoint
    _row("8L-256H", 20.0, [(0.25, 48.0), (0.5, 25.0)]),  # first ≤ 50: already at 25 %
]


def test_each_size_starts_from_its_first_checkpoint_at_the_worst_final_perplexity() -> None:
    m = match_perplexity(candidates(ROWS))
    assert m.target_ppl == 50.0 and m.worst_size == "2L-64H"
    assert {s: c.tag for s, c in m.choices.items()} == {"2L-64H": "final", "4L-128H": "k50", "8L-256H": "k25"}
    assert m.choices["8L-256H"].path == "pretrain/8L-256H/kept/k25" and m.choices["8L-256H"].elapsed_s == 25.0
    assert m.choices["4L-128H"].val_ppl == 45.0
    rec = m.record()
    assert rec["choices"]["4L-128H"]["tag"] == "k50" and "worst size" in rec["rule"]


def test_training_order_not_tag_order_and_an_exact_tie_counts() -> None:
    # "k100" sorts before "k25" as text; candidates go by elapsed time. A tie with the target qualifies.
    rows = [_row("2L-64H", 40.0, [(0.5, 41.0)]), _row("4L-128H", 10.0, [(0.1, 90.0), (0.3, 40.0), (0.6, 12.0)])]
    m = match_perplexity(candidates(rows))
    assert [c.tag for c in candidates(rows)["4L-128H"]] == ["k10", "k30", "k60", "final"]
    assert m.choices["4L-128H"].tag == "k30"


def test_the_worst_size_may_start_earlier_when_it_was_already_as_good() -> None:
    # Overfitting: the worst size's perplexity rose again before the end of its budget.
    rows = [_row("2L-64H", 50.0, [(0.25, 70.0), (0.5, 49.0)]), _row("4L-128H", 30.0, [(0.5, 33.0)])]
    m = match_perplexity(candidates(rows))
    assert m.choices["2L-64H"].tag == "k50" and m.choices["4L-128H"].tag == "k50"


def test_targets_per_mode() -> None:
    sizes = ["2L-64H", "4L-128H", "8L-256H"]
    final, match = finetune_targets("final", ROWS, sizes)
    assert [(t.key, t.checkpoint.tag, t.primary) for t in final] == [(s, "final", True) for s in sizes]
    assert match is not None  # recorded under every mode once checkpoints were kept
    every, _ = finetune_targets("every-kept", ROWS, sizes)
    assert [t.key for t in every] == ["2L-64H", "2L-64H@k25", "2L-64H@k50", "4L-128H", "4L-128H@k25",
                                      "4L-128H@k50", "4L-128H@k75", "8L-256H", "8L-256H@k25", "8L-256H@k50"]
    assert [t.primary for t in every].count(True) == 3 and every[1].checkpoint.path == "pretrain/2L-64H/kept/k25"
    matched, _ = finetune_targets("matched-perplexity", ROWS, sizes)
    assert [(t.key, t.checkpoint.tag) for t in matched] == [("2L-64H", "final"), ("4L-128H", "k50"), ("8L-256H", "k25")]
    with pytest.raises(StageError, match="no row for 16L-512H"):
        finetune_targets("final", ROWS, [*sizes, "16L-512H"])


def test_the_first_evaluation_at_the_target_is_recorded_beside_the_kept_choice() -> None:
    # 4L-128H's curve reaches ppl ≤ 50 at 30 % of its budget, between its kept checkpoints (k25: 55, k50: 45):
    # only kept checkpoints have weights, so it starts from k50, and the record shows the grid was coarse.
    curve = [{"step": 100 * i, "elapsed_s": 10.0 * i, "val_ppl": p}
             for i, p in enumerate([90.0, 70.0, 55.0, 49.0, 47.0, 45.0, 40.0], start=1)]
    sizes = ["2L-64H", "4L-128H", "8L-256H"]
    _, m = finetune_targets("matched-perplexity", ROWS, sizes, {"4L-128H": curve, "8L-256H": [{"step": 5, "val_ppl": 99.0}]})
    assert m is not None and m.choices["4L-128H"].tag == "k50"
    ev = m.record()["first_evaluated"]
    assert ev["4L-128H"]["step"] == 400 and ev["4L-128H"]["val_ppl"] == 49.0
    assert ev["4L-128H"]["fraction"] == pytest.approx(40.0 / 100.0)  # elapsed / the row's budget
    assert ev["8L-256H"] is None and ev["2L-64H"] is None  # never at the target / no curve given
    _, without = finetune_targets("matched-perplexity", ROWS, sizes)
    assert without is not None and without.record()["first_evaluated"] == {}
