"""The reproduction card: each claim's three statuses on constructed runs, "not measured" with its
reason when an input is missing, the card's files agreeing, and the comparison of several runs.

Every run here is a tiny constructed run directory (curves, result rows, predictions), no training.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tlc_export.cli import main
from tlc_export.predictions import SplitPredictions, save_predictions
from tlc_export.report import build_report, load_report_data
from tlc_export.report.answers import train_large_verdict
from tlc_export.report.claims import (
    FAILS,
    HOLDS,
    NOISE,
    NOT_MEASURED,
    build_card,
    card_for_run,
    compare_cards,
    compare_runs,
)
from tlc_export.report.claims.frontier import claim_frontier
from tlc_export.report.claims.rules import (
    combine,
    decide_difference,
    stability,
    status_from_outcome,
)
from tlc_export.stats import compare_paired

SMALL, MID, LARGE = "2L-128H", "3L-192H", "4L-256H"
PARAMS = {SMALL: 1_500_000, MID: 3_000_000, LARGE: 5_400_000}
BATCHES = 8
COUNTS = np.array([96, 104, 99, 101, 97, 103, 100, 100], dtype=float)
# Per-batch difficulty shared by every size (the same batches and masks), weighted to cancel in the mean.
OFFSETS = np.array([0.4, -0.3, 0.2, -0.1, 0.3, -0.2, -0.4, 0.1])
OFFSETS = OFFSETS - (OFFSETS * COUNTS).sum() / COUNTS.sum()
JITTER = np.array([0.03, -0.03, 0.02, -0.02, 0.03, -0.03, 0.02, -0.02])


# ---------------------------------------------------------------- constructed runs


@dataclass
class Curve:
    """loss(step) = 8 − k · ln(1 + step); `rate` steps per training second; 7 evaluations over 60 s."""

    k: float
    rate: float
    jitter_sign: float = 1.0


def _curve_points(size: str, c: Curve, batches: int | None) -> list[dict[str, Any]]:
    pts = []
    for t in range(0, 61, 10):
        step = round(c.rate * t)
        loss = 8.0 - c.k * math.log1p(step)
        p: dict[str, Any] = {"size": size, "elapsed_s": float(t), "step": step, "tokens": step * 2048,
                             "lr": 1e-3 * (1 - t / 60), "val_loss": loss, "val_ppl": math.exp(loss)}
        if batches:
            jit = c.jitter_sign * JITTER[:batches] * (step > 0)
            counts = COUNTS[:batches]
            per_batch = loss + OFFSETS[:batches] + jit
            per_batch = per_batch - ((per_batch - loss) * counts).sum() / counts.sum()  # keep the exact mean
            p["val_loss_sums"] = list(per_batch * counts)
            p["val_token_counts"] = list(counts)
        pts.append(p)
    return pts


def _variant(size: str, sparsity: float, bits: int, acc: float, storage: int, pred: str | None) -> dict[str, Any]:
    row = {"variant": f"{size}.s{round(sparsity * 100):02d}.b{bits}", "model": size, "params": PARAMS[size],
           "sparsity": sparsity, "bits": bits, "storage_bytes": storage, "fp32_bytes": PARAMS[size] * 4,
           "dev_accuracy": acc, "test_accuracy": acc}
    if pred:
        row["predictions"] = pred
    return row


N_TEST = 400
LABELS = np.random.default_rng(7).integers(0, 2, N_TEST)


def _predictions(correct: np.ndarray) -> dict[str, SplitPredictions]:
    pred = np.where(correct, LABELS, 1 - LABELS)
    dev = SplitPredictions(pred[:50], LABELS[:50])
    return {"dev": dev, "test": SplitPredictions(pred, LABELS)}


def _flags(n_correct: int, lost_from: int = 0, lost: int = 0) -> np.ndarray:
    """Correct on the first `n_correct` examples except `lost` of them starting at `lost_from`."""
    c = np.zeros(N_TEST, bool)
    c[:n_correct] = True
    c[lost_from:lost_from + lost] = False
    return c


MATRIX_SPREAD = (-0.1, -0.03, 0.03, 0.1)


def make_run(
    root: Path,
    curves: dict[str, Curve] | None = None,
    batches: int | None = BATCHES,
    drops: dict[str, tuple[int, int]] | None = None,  # size -> (4-bit drop, 60 %-sparse drop) in examples
    predictions: bool = True,
    pruning: bool = True,
    quant_error: dict[str, float] | None = None,
) -> Path:
    """A run directory with pretrain curves, compress rows and predictions, and the error analysis."""
    curves = curves if curves is not None else {SMALL: Curve(0.5, 10), LARGE: Curve(0.7, 8, -1)}
    sizes = list(curves)
    pre = root / "pretrain"
    rows = []
    for size, c in curves.items():
        (pre / size).mkdir(parents=True)
        pts = _curve_points(size, c, batches)
        (pre / size / "curves.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pts))
        rows.append({"model": size, "params": PARAMS[size], "steps": pts[-1]["step"], "final_val_loss": pts[-1]["val_loss"]})
    (pre / "results.json").write_text(json.dumps({"time_budget_s": 60, "models": rows}))

    drops = drops if drops is not None else {SMALL: (60, 80), LARGE: (4, 6)}
    variants = []
    for i, size in enumerate(sizes):
        dense_ok = 320 + 10 * i
        q_drop, p_drop = drops.get(size, (0, 0))
        # Each size loses different examples (offset by its index), so equal drops are not identical flags.
        settings = [(0.0, 32, 0, 0), (0.0, 8, 0, 0), (0.0, 4, 30 * i, q_drop)]
        if pruning:
            settings.append((0.6, 32, 150 + 30 * i, p_drop))
        for sp, bits, lost_from, lost in settings:
            rel = f"compress/{size}/variants/{size}.s{round(sp * 100):02d}.b{bits}.predictions.npz"
            flags = _flags(dense_ok, lost_from, lost)
            if predictions:
                save_predictions(root / rel, _predictions(flags))
            storage = PARAMS[size] * bits // 8 * (1 if not sp else 0.4)
            variants.append(_variant(size, sp, bits, float(flags.mean()), int(storage), rel if predictions else None))
    (root / "compress").mkdir(parents=True, exist_ok=True)
    (root / "compress" / "results.json").write_text(json.dumps(variants))

    quant_error = quant_error if quant_error is not None else {SMALL: 0.020, LARGE: 0.012}
    err = []
    for size in sizes:
        for t, share in (("attention.qkv", 0.3), ("ffn.in", 0.7)):
            m = quant_error.get(size, 0.015)
            err.append({"model": size, "module_type": t, "tensors": 4, "params": int(PARAMS[size] * share), "bits": 4,
                        "sparsity": 0.6, "quant_mean": m, "quant_var": (0.8 * m) ** 2, "quant_std": 0.8 * m,
                        "prune_mean": 2 * m, "prune_var": m**2, "prune_std": m,
                        "quant_matrix_means": [m * (1 + x) for x in MATRIX_SPREAD],
                        "prune_matrix_means": [2 * m] * 4})
        # The embeddings: most of the entries, one matrix, and a huge error for the largest size. Claim 5
        # leaves them out (they would swamp a parameter-weighted mean).
        big = 1.0 if size == LARGE else 0.001
        err.append({"model": size, "module_type": "embeddings", "tensors": 1, "params": PARAMS[size] * 3, "bits": 4,
                    "sparsity": 0.6, "quant_mean": big, "quant_var": big**2, "quant_std": big, "prune_mean": big,
                    "prune_var": big, "prune_std": big, "quant_matrix_means": [big], "prune_matrix_means": [big]})
    (root / "compress" / "error_analysis.json").write_text(json.dumps(err))
    return root


def card(root: Path) -> dict[int, Any]:
    return build_card(load_report_data(root, "t")).by_number()


# ---------------------------------------------------------------- the rules


def test_decision_rules() -> None:
    assert decide_difference(-0.3, -0.1, "lower") == HOLDS
    assert decide_difference(0.1, 0.3, "lower") == FAILS
    assert decide_difference(-0.1, 0.2, "lower") == NOISE
    assert decide_difference(0.01, 0.2, "higher") == HOLDS
    assert decide_difference(-0.2, -0.01, "higher") == FAILS
    with pytest.raises(ValueError):
        decide_difference(float("nan"), 1.0, "lower")
    assert [status_from_outcome(o) for o in ("won", "lost", "within noise", None)] == [HOLDS, FAILS, NOISE, NOT_MEASURED]
    assert combine([HOLDS, NOT_MEASURED]) == HOLDS
    assert combine([HOLDS, NOISE]) == NOISE
    assert combine([HOLDS, FAILS]) == FAILS
    assert combine([NOT_MEASURED, NOT_MEASURED]) == NOT_MEASURED
    assert stability([HOLDS, HOLDS, NOT_MEASURED]) == "stable"
    assert stability([HOLDS, NOISE]) == "unstable"
    assert stability([HOLDS, NOT_MEASURED]) == "not compared"


# ---------------------------------------------------------------- claims 1 and 2: curves


def _final_diff_by_hand(root: Path, small: str, large: str) -> float:
    def final(size: str) -> float:
        last = [json.loads(x) for x in (root / "pretrain" / size / "curves.jsonl").read_text().splitlines()][-1]
        return sum(last["val_loss_sums"]) / sum(last["val_token_counts"])

    return final(large) - final(small)


def test_curves_claims_hold_when_larger_is_lower_per_second_and_per_step(tmp_path: Path) -> None:
    root = make_run(tmp_path / "r", curves={SMALL: Curve(0.5, 10), MID: Curve(0.6, 9), LARGE: Curve(0.7, 8, -1)})
    c = card(root)
    assert c[1].status == HOLDS and c[2].status == HOLDS
    assert c[1].compared == {"larger": LARGE, "smaller": SMALL}
    assert c[1].estimate == pytest.approx(_final_diff_by_hand(root, SMALL, LARGE), abs=1e-9)
    lo, hi = c[1].interval
    assert lo < c[1].estimate < hi < 0
    assert c[1].numbers["lowest_final_loss"] == LARGE and c[1].numbers["validation_batches"] == BATCHES
    mid = next(r for r in c[1].numbers["final"] if r["model"] == MID)
    assert mid["minus_smallest"] == pytest.approx(_final_diff_by_hand(root, SMALL, MID), abs=1e-9)
    assert mid["minus_smallest_interval"][1] < 0
    # Claim 2 compares at the last step every size reached (the largest's 480), the others interpolated.
    assert c[2].numbers["last_common_step"] == 480
    assert set(c[2].numbers["interpolated"]) == {SMALL, MID}
    assert any("not equal schedules" in n for n in c[2].notes)
    assert "lr at step 480" in " ".join(c[2].notes)


def test_quickstart_shape_wallclock_fails_while_steps_hold(tmp_path: Path) -> None:
    # The small model makes 5× the steps in the same time: behind per step, ahead per second.
    root = make_run(tmp_path / "r", curves={SMALL: Curve(0.5, 10), LARGE: Curve(0.6, 2, -1)})
    c = card(root)
    assert c[1].status == FAILS and c[1].interval[0] > 0
    assert c[2].status == HOLDS and c[2].interval[1] < 0
    # loss at step 120: small interpolated between its evaluations at steps 100 and 200
    small_120 = 8 - 0.5 * (math.log1p(100) + 0.2 * (math.log1p(200) - math.log1p(100)))
    large_120 = 8 - 0.6 * math.log1p(120)
    assert c[2].estimate == pytest.approx(large_120 - small_120, abs=1e-9)
    matched = c[1].numbers["matched_wallclock"]
    assert [m["elapsed_s"] for m in matched] == [15, 30, 45, 60]
    assert all(m["leader"] == SMALL for m in matched)


def test_curves_claims_fail_and_tie(tmp_path: Path) -> None:
    fail = card(make_run(tmp_path / "f", curves={SMALL: Curve(0.7, 10), LARGE: Curve(0.5, 8, -1)}))
    assert fail[1].status == FAILS and fail[2].status == FAILS
    tie = card(make_run(tmp_path / "t", curves={SMALL: Curve(0.6, 10), LARGE: Curve(0.6, 10, -1)}))
    assert tie[1].status == NOISE and tie[2].status == NOISE
    assert tie[1].estimate == pytest.approx(0, abs=1e-9)
    assert tie[1].interval[0] < 0 < tie[1].interval[1]


def test_curves_without_per_batch_losses_or_with_too_few_batches_are_not_measured(tmp_path: Path) -> None:
    none = card(make_run(tmp_path / "n", batches=None))
    for n in (1, 2):
        assert none[n].status == NOT_MEASURED and "val_loss_sums" in none[n].reason
        assert none[n].interval is None and none[n].estimate is not None  # the point estimate is still shown
        assert none[n].status_text == f"not measured ({none[n].reason})"
    few = card(make_run(tmp_path / "few", batches=4))
    assert few[1].status == NOT_MEASURED and "pretrain.eval_batches" in few[1].reason
    diverged = make_run(tmp_path / "nan")
    curve = diverged / "pretrain" / LARGE / "curves.jsonl"
    pts = [json.loads(x) for x in curve.read_text().splitlines()]
    pts[-1]["val_loss"] = float("nan")
    curve.write_text("".join(json.dumps(p) + "\n" for p in pts))
    nan = card(diverged)
    assert nan[1].status == NOT_MEASURED and "not finite" in nan[1].reason
    build_report(load_report_data(diverged, "nan"), diverged / "report")
    strict = json.loads((diverged / "report" / "claims.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"claims.json holds {c}"))
    assert strict["claims"][0]["estimate"] is None


def test_one_size_is_not_measured_with_the_reason(tmp_path: Path) -> None:
    c = card(make_run(tmp_path / "r", curves={LARGE: Curve(0.7, 8)}))
    for n in (1, 2, 3, 5):
        assert c[n].status == NOT_MEASURED
        assert "one size" in c[n].reason and "models.sizes" in c[n].reason, (n, c[n].reason)
    assert c[4].status == NOT_MEASURED and c[4].reason


# ---------------------------------------------------------------- claim 3: accuracy drops


def _drop(root: Path, size: str, compressed: str) -> np.ndarray:
    from tlc_export.predictions import load_predictions

    d = load_predictions(root / f"compress/{size}/variants/{size}.s00.b32.predictions.npz")["test"]
    c = load_predictions(root / f"compress/{size}/variants/{size}.{compressed}.predictions.npz")["test"]
    return (d.predicted == d.labels).astype(int) - (c.predicted == c.labels).astype(int)


def test_compression_claim_holds_fails_and_ties(tmp_path: Path) -> None:
    root = make_run(tmp_path / "h", drops={SMALL: (60, 80), LARGE: (4, 6)})
    c = card(root)[3]
    assert c.status == HOLDS
    parts = {p.name: p for p in c.parts}
    assert parts["quantization"].status == HOLDS and parts["pruning"].status == HOLDS
    by_hand = (_drop(root, LARGE, "s00.b4") - _drop(root, SMALL, "s00.b4")).mean()
    assert parts["quantization"].estimate == pytest.approx(by_hand, abs=1e-12)
    assert parts["quantization"].estimate == pytest.approx((4 - 60) / N_TEST)
    assert parts["pruning"].estimate == pytest.approx((6 - 80) / N_TEST)
    per = {r["model"]: r for r in parts["quantization"].numbers["per_size"]}
    assert per[SMALL]["drop"] == pytest.approx(60 / N_TEST) and per[SMALL]["drop_interval"][0] > 0
    assert "does not shrink" not in parts["quantization"].evidence
    assert parts["pruning"].numbers["sparsity"] == 0.6

    assert card(make_run(tmp_path / "f", drops={SMALL: (4, 6), LARGE: (60, 80)}))[3].status == FAILS
    tie = card(make_run(tmp_path / "t", drops={SMALL: (20, 20), LARGE: (20, 20)}))[3]
    assert tie.status == NOISE and tie.interval[0] < 0 < tie.interval[1]
    # One pretraining seed: a decided claim says so wherever it is printed.
    assert c.seeds == 1 and c.status_text == "holds (one seed: indicative)" and c.to_dict()["indicative"] is True


def test_compression_claim_on_few_differing_examples_is_not_decided(tmp_path: Path) -> None:
    # 4 examples lost by the small model and none by the large: a bootstrap interval excludes 0, but four
    # one-way examples are p = 0.125 for the exact sign-flip test, so the part is within noise.
    c = card(make_run(tmp_path / "few", drops={SMALL: (4, 4), LARGE: (0, 0)}))[3]
    q = {p.name: p for p in c.parts}["quantization"]
    assert q.status == NOISE and q.numbers["examples_differing"] == 4 and q.numbers["sign_flip_p"] == pytest.approx(0.125)


def test_claim_3_is_not_measured_when_a_compared_model_did_not_learn(tmp_path: Path) -> None:
    root = make_run(tmp_path / "weak", drops={SMALL: (60, 80), LARGE: (4, 6)})
    rows = json.loads((root / "compress" / "results.json").read_text())
    for r in rows:
        r["learned_task"] = not (r["model"] == SMALL and r["variant"].endswith("s00.b32")) and r["model"] != SMALL
    (root / "compress" / "results.json").write_text(json.dumps(rows))
    c = card(root)
    assert c[3].status == NOT_MEASURED and "did not learn the task" in c[3].reason


def test_compression_drop_shape_is_stated_across_three_sizes(tmp_path: Path) -> None:
    curves = {SMALL: Curve(0.5, 10), MID: Curve(0.6, 9), LARGE: Curve(0.7, 8)}
    mono = card(make_run(tmp_path / "m", curves=curves, drops={SMALL: (60, 80), MID: (30, 40), LARGE: (4, 6)}))[3]
    assert "shrinks with every step up in size" in mono.parts[0].evidence
    bumpy = card(make_run(tmp_path / "b", curves=curves, drops={SMALL: (60, 80), MID: (70, 90), LARGE: (4, 6)}))[3]
    assert "not at every step" in bumpy.parts[0].evidence


def test_compression_without_pruning_or_predictions_is_not_measured(tmp_path: Path) -> None:
    no_prune = card(make_run(tmp_path / "p", pruning=False))[3]
    parts = {p.name: p for p in no_prune.parts}
    assert parts["pruning"].status == NOT_MEASURED and "compress.prune.sparsity" in parts["pruning"].reason
    assert no_prune.status == HOLDS  # decided by its measured part, the missing one named
    assert "pruning: not measured" in no_prune.evidence
    no_pred = card(make_run(tmp_path / "n", predictions=False))[3]
    assert no_pred.status == NOT_MEASURED and "predictions" in no_pred.reason
    shown = {r["model"]: r["drop"] for r in no_pred.parts[0].numbers["per_size_point_estimates"]}
    assert shown == pytest.approx({SMALL: 60 / N_TEST, LARGE: 4 / N_TEST})  # the rows' accuracies, no interval
    assert "without intervals" in no_pred.evidence
    assert no_pred.interval is None


# ---------------------------------------------------------------- claim 4: the verdict


def test_frontier_claim_maps_the_verdict(tmp_path: Path) -> None:
    def rows(large_acc: float, large_storage: int) -> list[dict[str, Any]]:
        return [_variant(SMALL, 0.0, 32, 0.70, 6_000_000, None), _variant(SMALL, 0.0, 8, 0.70, 1_500_000, None),
                _variant(LARGE, 0.0, 32, 0.80, 21_600_000, None), _variant(LARGE, 0.6, 4, large_acc, large_storage, None)]

    def preds(correct_fraction: float) -> dict[str, SplitPredictions]:
        right = np.arange(N_TEST) < round(correct_fraction * N_TEST)
        return {"test": SplitPredictions(np.where(right, LABELS, 1 - LABELS), LABELS)}

    def verdict(rows_: list[dict[str, Any]], large_correct: float):
        for r in rows_:
            r["predictions"] = r["variant"]
        table = {r["variant"]: preds(large_correct if r["model"] == LARGE else 0.70) for r in rows_}
        return train_large_verdict(rows_, table)

    won, lost, unfit = rows(0.75, 1_000_000), rows(0.65, 1_000_000), rows(0.75, 2_000_000)
    # The verdict's paired test on the test split decides: 90 % vs 70 % correct on 400 shared examples wins,
    # 50 % vs 70 % loses.
    v_won, v_lost = verdict(won, 0.90), verdict(lost, 0.50)
    assert v_won.outcome == "won" and v_lost.outcome == "lost"
    assert claim_frontier(won, v_won).status == HOLDS and claim_frontier(won, v_won).evidence == v_won.sentence
    assert claim_frontier(lost, v_lost).status == FAILS
    # The reference did not learn the task: the verdict decides nothing and claim 4 says why.
    weak = rows(0.75, 1_000_000)
    weak[1]["learned_task"] = False
    v_weak = verdict(weak, 0.90)
    assert not v_weak.decided and claim_frontier(weak, v_weak).status == NOT_MEASURED
    assert claim_frontier(weak, v_weak).reason.startswith(f"Not decided: {SMALL}.s00.b8 did not learn the task")
    # Without per-example predictions no paired test can be made: not measured, and the reason says so.
    bare = rows(0.75, 1_000_000)
    assert claim_frontier(bare).status == NOT_MEASURED and "predictions" in claim_frontier(bare).reason
    # No variant of the large model fits the reference's storage: the comparison was not made.
    assert claim_frontier(unfit).status == NOT_MEASURED and "fits" in claim_frontier(unfit).reason
    assert claim_frontier([]).status == NOT_MEASURED and "compress" in claim_frontier([]).reason
    variants = won
    v = train_large_verdict(variants)

    @dataclass
    class NewVerdict:  # the verdict once it carries its paired test (outcome, comparison, split)
        decided: bool
        won: bool
        sentence: str
        reference: dict | None
        witness: dict | None
        outcome: str | None
        comparison: Any
        split: str

    a = np.array([True] * 90 + [False] * 10)
    b = np.array([True] * 60 + [False] * 40)
    for outcome, cmp, status in (("won", compare_paired(a, b), HOLDS), ("lost", compare_paired(b, a), FAILS),
                                 ("within noise", compare_paired(a, a), NOISE), (None, None, NOT_MEASURED)):
        nv = NewVerdict(outcome is not None, outcome == "won", "sentence.", v.reference, v.witness, outcome, cmp, "test")
        claim = claim_frontier(variants, nv)  # type: ignore[arg-type]
        assert claim.status == status
        if cmp is not None:
            assert claim.interval == (cmp.diff_ci_low, cmp.diff_ci_high) and claim.numbers["split"] == "test"


# ---------------------------------------------------------------- claim 5: quantization error


def test_error_claim_holds_fails_and_ties(tmp_path: Path) -> None:
    c = card(make_run(tmp_path / "h", quant_error={SMALL: 0.020, LARGE: 0.012}))[5]
    assert c.status == HOLDS and c.estimate == pytest.approx(0.012 - 0.020)
    # Independent reference: 4 matrices per type and size with errors m·(1 ± 0.1), m·(1 ± 0.03); two module
    # types alike, so the mean over types has variance (s_L²/4 + s_S²/4) / 2 with s = m·sd(spread), and by
    # Welch–Satterthwaite 2·(a + b)² / (a²/3 + b²/3) degrees of freedom (a, b the two sizes' s²/4).
    sd = float(np.std(MATRIX_SPREAD, ddof=1))
    a, b = (0.012 * sd) ** 2 / 4, (0.020 * sd) ** 2 / 4
    df = 2 * (a + b) ** 2 / (a * a / 3 + b * b / 3)
    assert 9 < df < 11  # t(0.975, 9) = 2.262, t(0.975, 11) = 2.201 (tables)
    se = math.sqrt((a + b) / 2)
    assert -0.008 - 2.262 * se <= c.interval[0] <= -0.008 - 2.201 * se
    assert -0.008 + 2.201 * se <= c.interval[1] <= -0.008 + 2.262 * se
    assert c.numbers["module_types_lower_for_larger"] == ["attention.qkv", "ffn.in"]
    assert c.numbers["module_types_compared"] == ["attention.qkv", "ffn.in"]  # not the embeddings
    assert card(make_run(tmp_path / "f", quant_error={SMALL: 0.012, LARGE: 0.020}))[5].status == FAILS
    assert card(make_run(tmp_path / "t", quant_error={SMALL: 0.015, LARGE: 0.015}))[5].status == NOISE


# ---------------------------------------------------------------- the files agree


class _Rows(HTMLParser):
    """Cells of #claims-table, by claim number (stdlib parser: independent of the renderer)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, dict[str, Any]] = {}
        self._in_table = False
        self._row: dict[str, Any] | None = None
        self._cell: list[str] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == "claims-table":
            self._in_table = True
        elif self._in_table and tag == "tr" and a.get("data-claim"):
            self._row = {"attrs": a, "cells": []}
            self.rows[int(a["data-claim"] or 0)] = self._row
        elif self._row is not None and tag == "td":
            self._cell = []
        elif self._cell is not None and tag == "details":
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "details" and self._depth:
            self._depth -= 1
        elif tag == "td" and self._row is not None and self._cell is not None:
            self._row["cells"].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._in_table = False
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not self._depth:
            self._cell.append(data)


def test_claims_json_html_and_markdown_agree(tmp_path: Path) -> None:
    root = make_run(tmp_path / "r", curves={SMALL: Curve(0.5, 10), LARGE: Curve(0.6, 2, -1)}, pruning=False)
    out = build_report(load_report_data(root, "agree"), root / "report")
    data = json.loads((root / "report" / "claims.json").read_text())
    assert out["claims"] == "report/claims.json"
    assert [c["number"] for c in data["claims"]] == [1, 2, 3, 4, 5, 6, 7]
    assert {c["status"] for c in data["claims"]} >= {HOLDS, FAILS}
    html = (root / "report" / "index.html").read_text()
    assert html.index("id='claims'") < html.index("id='verdict'")  # the card opens the report
    parser = _Rows()
    parser.feed(html)
    md = (root / "report" / "summary.md").read_text()
    assert md.index("Claims of the paper") < md.index("## Verdict")
    for c in data["claims"]:
        row = parser.rows[c["number"]]
        assert row["attrs"]["data-status"] == c["status"]
        number, claim, figure, status, d_cell = row["cells"][:5]
        assert (number, claim, figure, status) == (str(c["number"]), c["claim"], c["figure"], c["status_text"])
        assert out["claims_status"][str(c["number"])] == c["status"]
        nums = [float(x) for x in re.findall(r"[-+]\d[\d.e+-]*", d_cell)]
        expected = ([c["estimate"]] if c["estimate"] is not None else []) + list(c["interval"] or [])
        assert nums == pytest.approx(expected, rel=1e-3, abs=1e-12), (c["number"], d_cell)
        md_row = next(line for line in md.splitlines() if line.startswith(f"| {c['number']} | "))
        assert c["status_text"].replace("|", "\\|") in md_row


# ---------------------------------------------------------------- several runs


def test_compare_marks_a_flipped_claim_unstable(tmp_path: Path) -> None:
    a = make_run(tmp_path / "budget-long", curves={SMALL: Curve(0.5, 10), LARGE: Curve(0.7, 8, -1)})
    b = make_run(tmp_path / "budget-short", curves={SMALL: Curve(0.5, 10), LARGE: Curve(0.6, 2, -1)})
    cmp = compare_cards([card_for_run(a), card_for_run(b)], ["long", "short"])
    rows = {r["number"]: r for r in cmp["claims"]}
    assert [c["status"] for c in rows[1]["runs"]] == [HOLDS, FAILS] and rows[1]["stability"] == "unstable"
    assert rows[2]["stability"] == "stable" and rows[5]["stability"] == "stable"
    assert cmp["unstable"] == [1]

    out = tmp_path / "cmp"
    res = CliRunner().invoke(main, ["report", "--compare", str(a), str(b), "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "unstable" in res.output and "budget-long" in res.output and "budget-short" in res.output
    saved = json.loads((out / "claims_compare.json").read_text())
    assert saved["unstable"] == [1]
    assert "data-stability='unstable'" in (out / "claims_compare.html").read_text()
    assert "**unstable**" in (out / "claims_compare.md").read_text()

    bad = CliRunner().invoke(main, ["report", "--compare", str(a), str(tmp_path / "nope")])
    said = " ".join(bad.output.split())
    assert bad.exit_code == 1 and "nope: no such run directory" in said
    one = CliRunner().invoke(main, ["report", "--compare", str(a)])
    assert one.exit_code == 1 and "at least two" in " ".join(one.output.split())


def test_compare_agrees_with_each_runs_own_card(tmp_path: Path) -> None:
    """`--compare` recomputes each card; on every claim both runs measured it must say what the run's
    own report said (claim 4 included: it needs the runs' per-example predictions to be paired)."""
    a = make_run(tmp_path / "seed-a")
    b = make_run(tmp_path / "seed-b", curves={SMALL: Curve(0.5, 10), LARGE: Curve(0.6, 2, -1)},
                 drops={SMALL: (60, 80), LARGE: (70, 90)})
    own = {}
    for root, right in ((a, 320), (b, 180)):  # the large dense model gets 330 right: no recovery gain
        # a large variant small enough to be compared with the small reference (2L-128H.s60.b32, 2.4 MB)
        rel = f"compress/{LARGE}/variants/{LARGE}.s60.b4.predictions.npz"
        save_predictions(root / rel, _predictions(_flags(right)))
        rows = json.loads((root / "compress" / "results.json").read_text())
        rows.append(_variant(LARGE, 0.6, 4, right / N_TEST, 1_080_000, rel))
        (root / "compress" / "results.json").write_text(json.dumps(rows))
        build_report(load_report_data(root, root.name), root / "report")
        own[root.name] = {c["number"]: c for c in json.loads((root / "report" / "claims.json").read_text())["claims"]}
    assert own["seed-a"][4]["status"] == HOLDS and own["seed-b"][4]["status"] == FAILS  # both measure claim 4
    res = CliRunner().invoke(main, ["report", "--compare", str(a), str(b), "--out", str(tmp_path / "cmp")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    cmp = json.loads((tmp_path / "cmp" / "claims_compare.json").read_text())
    checked = 0
    for row in cmp["claims"]:
        for run, cell in zip(cmp["runs"], row["runs"], strict=True):
            mine = own[run["label"]][row["number"]]
            if mine["status"] == NOT_MEASURED:
                continue
            assert cell["status"] == mine["status"], (run["label"], row["number"], cell, mine["status"])
            if mine["estimate"] is not None:
                assert cell["estimate"] == pytest.approx(mine["estimate"])
            checked += 1
    assert checked >= 8  # claims 1-5 of both runs, less any a run did not measure
    assert "rerun the compress stage" not in " ".join(res.output.split())


def _resolved(root: Path, seed: int, budget: float = 60) -> None:
    (root / "recipe.resolved.yaml").write_text(
        f"name: r{seed}\nmodels: {{sizes: [a, b]}}\npretrain: {{time_budget_s: {budget}, seed: {seed}}}\n")


def test_compare_pools_seed_replicates_like_pretrain_seeds(tmp_path: Path) -> None:
    # Three runs of one recipe with seeds 0, 1, 2: claims 1 and 2 pooled over the seeds, a t-interval with 2 df.
    runs = [make_run(tmp_path / f"s{i}", curves={SMALL: Curve(0.5, 10), LARGE: Curve(k, 8, -1)})
            for i, k in enumerate((0.7, 0.65, 0.75))]
    for i, r in enumerate(runs):
        _resolved(r, i)
    cmp = compare_runs(runs)
    rows = {r["number"]: r for r in cmp["claims"]}
    per_run = [_final_diff_by_hand(r, SMALL, LARGE) for r in runs]
    pooled = rows[1]["pooled"]
    assert pooled["seeds"] == 3 and pooled["estimate"] == pytest.approx(np.mean(per_run), abs=1e-9)
    half = 4.303 * np.std(per_run, ddof=1) / math.sqrt(3)  # t(0.975, 2) from the table
    assert pooled["interval"] == pytest.approx((np.mean(per_run) - half, np.mean(per_run) + half), abs=1e-3)
    assert "indicative" not in pooled["status_text"] and rows[2]["pooled"]["seeds"] == 3
    assert rows[3]["pooled"] is None and "3 pretraining seeds" in cmp["pooled_note"]
    # Each run alone is one seed: its decided statuses are indicative.
    assert all(c["status_label"].endswith("(one seed: indicative)") for c in rows[1]["runs"] if c["status"] == HOLDS)
    # Runs that differ in more than the seed (here the budget) are not pooled, and the note says why.
    _resolved(runs[2], 2, budget=30)
    other = compare_runs(runs)
    assert all(r["pooled"] is None for r in other["claims"]) and "not replicates" in other["pooled_note"]
    _resolved(runs[2], 1)
    same = compare_runs(runs)
    assert all(r["pooled"] is None for r in same["claims"]) and "share pretraining seeds" in same["pooled_note"]


def test_a_run_without_compress_results_says_to_run_the_stage(tmp_path: Path) -> None:
    root = make_run(tmp_path / "r")
    for f in ("results.json", "error_analysis.json"):
        (root / "compress" / f).unlink()
    c = card(root)
    for n in (3, 4, 5):
        assert c[n].status == NOT_MEASURED and "run the compress stage" in c[n].reason, (n, c[n].reason)
    assert c[1].status == HOLDS  # the curves are still there


def test_console_card_shows_every_status_and_every_reason(tmp_path: Path) -> None:
    from rich.console import Console

    from tlc_export.report.claims import card_table

    c = build_card(load_report_data(make_run(tmp_path / "r", predictions=False), "t"))
    con = Console(record=True, width=200)
    con.print(card_table(c))
    text = " ".join(con.export_text().split())
    for claim in c.claims:
        assert claim.status in text
        if claim.status == NOT_MEASURED:
            assert f"{claim.number}. not measured: {claim.reason}" in text


def test_card_gives_d_its_unit_and_the_console_says_a_model_did_not_learn(tmp_path: Path) -> None:
    from rich.console import Console

    from tlc_export.report.claims import card_table
    from tlc_export.report.claims.render import interval_text

    root = make_run(tmp_path / "r")
    c = card(root)
    assert interval_text(c[1]).endswith("] nats") and interval_text(c[2]).endswith("] nats")
    assert interval_text(c[3]).endswith("] Δ drop (fraction)") and interval_text(c[5]).endswith("] mean |W − Q4(W)|")
    # a drop is accuracy lost: the large model here loses 4 examples in 400 at 4 bits, so its drop is +1.0 point
    assert f"{LARGE} +1.0 [" in c[3].evidence and "positive = lost" in c[3].evidence

    rows = json.loads((root / "compress" / "results.json").read_text())
    rel = f"compress/{LARGE}/variants/{LARGE}.s60.b4.predictions.npz"
    save_predictions(root / rel, _predictions(_flags(320)))
    rows.append(_variant(LARGE, 0.6, 4, 0.8, 1_080_000, rel))
    (root / "compress" / "results.json").write_text(json.dumps(rows))
    c4 = card(root)[4]
    assert c4.status == HOLDS and interval_text(c4).endswith("] accuracy (fraction)")
    # the same large variant flagged as not above the majority class: the console card says why it decides nothing
    rows[-1]["learned_task"] = False
    (root / "compress" / "results.json").write_text(json.dumps(rows))
    con = Console(record=True, width=100)
    con.print(card_table(build_card(load_report_data(root, "t"))))
    text = " ".join(con.export_text().split())
    assert f"4. not measured: Not decided: {LARGE}.s60.b4 did not learn the task" in text
