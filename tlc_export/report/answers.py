"""The report's answers: best variant per storage / latency budget, and whether "train large, then
compress" won on this run.

Every function here is a pure function of result rows (and, optionally, per-example predictions
already loaded): no file I/O, so `tlc package --max-storage-mb/--max-latency-ms` can call them and
pick exactly the variant the report names.

Split jobs (`tlc_export.scoring`): the selection split (dev) picks — the variant an answer names,
the large model's variant the verdict compares — and the report split (test) reports, with 95 %
intervals and paired tests on the same examples. Picking on test and then reporting test would
report the luckiest of many noisy numbers.

Within a budget an accuracy answer prefers speed and storage where they are shown to be free
(`prefer_cheaper`): a row cheaper than the dev-best is picked when, paired on the same dev examples,
the one-sided 95 % lower bound of its accuracy minus the dev-best's is above −margin (the recipe's
`report.noninferiority_margin_points`, default 1 point). The translation family (BLEU, its own
`compare`) keeps the plain dev-best rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlc_export import stats
from tlc_export.predictions import SplitPredictions
from tlc_export.report.data import compression_label
from tlc_export.report.pareto import geometric_budgets
from tlc_export.scoring import REPORT_SPLIT, SELECTION_SPLIT

Predictions = Mapping[str, Mapping[str, SplitPredictions]]
"""Run-relative predictions path (a row's `predictions`) -> split -> per-example predictions."""

Row = dict[str, Any]


NONINFERIORITY_MARGIN = 0.01
"""How much dev accuracy (0.01 = 1 point) a cheaper row may be shown to lose and still be preferred; the
recipe's `report.noninferiority_margin_points` (the same default, in points) overrides it."""

NONINFERIORITY_ALPHA = 0.05
"""One-sided level of the non-inferiority bound (`stats.paired_lower_bound`)."""

Comparator = Callable[[Row, Row, str], Any]
"""(a, b, split) -> a paired comparison of A against B on `split` (with `outcome` in {"won", "lost",
"within noise"}, `p_value`, `diff`, `diff_ci_low`, `diff_ci_high`, `n`), or None when it cannot be made.
Classification's is `paired` (exact McNemar); translation's a paired bootstrap over sentences."""


def score(r: Row, split: str, metric: str = "accuracy") -> float:
    """`<split>_<metric>` of a row (e.g. `test_bleu`), NaN when absent."""
    v = r.get(f"{split}_{metric}")
    return float("nan") if v is None else float(v)


def accuracy(r: Row, split: str) -> float:
    """`<split>_accuracy` of a row, NaN when absent."""
    return score(r, split, "accuracy")


def _storage(r: Row) -> float:
    v = r.get("storage_bytes")
    return float("nan") if v is None else float(v)


def _ok(x: float) -> bool:
    return x == x


def usable_variants(variants: Sequence[Row], select_split: str = SELECTION_SPLIT,
                    report_split: str = REPORT_SPLIT, *, metric: str = "accuracy") -> list[Row]:
    """Variants with a storage size and both the selection and the report score (`<split>_<metric>`)."""
    return [r for r in variants
            if r.get("storage_bytes") and _ok(score(r, select_split, metric)) and _ok(score(r, report_split, metric))]


def correct_flags(row: Row | None, predictions: Predictions | None, split: str) -> np.ndarray | None:
    """Per-example correctness of a row's model on `split`, or None when its predictions are not there."""
    if row is None or not predictions or not row.get("predictions"):
        return None
    sp = predictions.get(row["predictions"], {}).get(split)
    return None if sp is None else sp.correct


def paired(a: Row, b: Row, predictions: Predictions | None, split: str = REPORT_SPLIT) -> stats.PairedComparison | None:
    """A against B on the same `split` examples (exact McNemar + paired bootstrap), or None without predictions."""
    ca, cb = correct_flags(a, predictions, split), correct_flags(b, predictions, split)
    if ca is None or cb is None or ca.shape != cb.shape:
        return None
    return stats.compare_paired(ca, cb)


def own_uncompressed(row: Row, variants: Sequence[Row]) -> Row | None:
    """The uncompressed (dense fp32) variant of the row's own model, or None (or the row itself) when absent."""
    return next((r for r in variants if r.get("model") == row.get("model") and not float(r.get("sparsity") or 0)
                 and int(r.get("bits") or 32) == 32), None)


def is_compressed(row: Row) -> bool:
    return float(row.get("sparsity") or 0) > 0 or int(row.get("bits") or 32) < 32


def training_effects(variants: Sequence[Row], compare: Comparator, split: str = REPORT_SPLIT) -> dict[str, Any]:
    """Compressed variants that significantly beat their own uncompressed model on `split`: variant -> comparison.

    Compression removes information, so a variant that is *more* accurate than its own dense model
    got something else: pruning recovery is more finetuning, which an under-trained dense model never
    had. Such a gain is a training effect and must not be read as a compression effect. Each variant
    is one paired test (McNemar for classification) at 0.05: with many variants an isolated flag can
    be chance, about one in forty variants with no effect (the test is two-sided).
    """
    out: dict[str, Any] = {}
    for r in variants:
        base = own_uncompressed(r, variants)
        if not is_compressed(r) or base is None:
            continue
        c = compare(r, base, split)
        if c is not None and c.outcome == "won":
            out[str(r["variant"])] = c
    return out


def training_effect_text(row: Row, base: Row, c: Any, split: str, unit: str = "points", scale: float = 100.0) -> str:
    head = (f"{row['variant']} ({compression_label(row)}) scores significantly above its own uncompressed model "
            f"{base['variant']} on {split} ({scale * c.diff:+.1f} {unit}, p = {c.p_value:.2g}): ")
    if float(row.get("sparsity") or 0) > 0:
        return head + ("its recovery gave it training the uncompressed model lacked, so this gain is a training "
                       "effect, not a compression effect")
    # Quantized only: it had no recovery training, so the recovery explanation would be false.
    return head + ("it was quantized without any retraining, so with every variant of the run tested this way a "
                   "lone flag like this is most likely chance (about one in forty variants with no effect); it is "
                   "kept out of the verdict all the same")


def p_text(p: float) -> str:
    """`p = 0.034`; a p-value of exactly 0 can only come from a bootstrap where no resample went the other way
    (an exact test never gives 0), and is written as below the resolution of the project's 1,000 resamples."""
    return "p < 0.001" if p == 0 else f"p = {p:.2g}"


def rank(rows: Sequence[Row], cost: Callable[[Row], float], select_split: str, metric: str = "accuracy") -> list[Row]:
    """Best selection-split score first; ties: the cheaper, then the name (deterministic)."""
    return sorted(rows, key=lambda r: (-score(r, select_split, metric), cost(r), str(r.get("variant")), str(r.get("backend"))))


def noninferiority_bound(cheap: Row, best: Row, predictions: Predictions | None, split: str = SELECTION_SPLIT) -> float | None:
    """One-sided 95 % lower bound of accuracy(cheap) − accuracy(best) on `split`, paired on the same examples
    (`stats.paired_lower_bound`: Tango's score bound, which allows for how many examples differ); None
    without both rows' per-example predictions there.

    A row whose predictions equal the best's gets −0.45 points at 800 dev examples, −3.5 at 100; a short
    split or many differing examples give a low bound.
    """
    ca, cb = correct_flags(cheap, predictions, split), correct_flags(best, predictions, split)
    if ca is None or cb is None or ca.shape != cb.shape or ca.size == 0:
        return None
    return stats.paired_lower_bound(ca, cb, alpha=NONINFERIORITY_ALPHA)


@dataclass(frozen=True)
class Pick:
    """Which row an accuracy answer names: the dev-best, or a cheaper row shown to cost at most `margin`."""

    row: Row
    best: Row  # the dev-best within the budget
    margin: float
    lower_bound: float | None = None  # of accuracy(row) − accuracy(best) on dev; None when row is best

    @property
    def preferred(self) -> bool:
        return self.row is not self.best


def prefer_cheaper(ranked: Sequence[Row], cost: Callable[[Row], float], predictions: Predictions | None,
                   select_split: str = SELECTION_SPLIT, margin: float = NONINFERIORITY_MARGIN) -> Pick:
    """The cheapest row of `ranked` (dev-best first, `rank`) that is non-inferior to the dev-best on
    `select_split`, else the dev-best.

    Non-inferior: strictly cheaper than the dev-best (`cost`: p50 latency, storage bytes), and the one-sided
    95 % lower bound of (its accuracy − the dev-best's), paired on the same dev examples
    (`noninferiority_bound`), is above −margin. Absence of evidence is not evidence: a row without dev
    predictions, or whose interval is too wide, is not preferred. Each cheaper row is one test at 5 %
    (tests/unit/test_calibration.py simulates its false-positive rate at a true difference of exactly
    −margin); with several cheaper rows that are each truly worse by the margin, the chance that one of them
    is picked can exceed 5 % (no multiplicity correction; rows of one model on several backends share their
    predictions and so their decision). Accuracy only: a BLEU answer keeps the dev-best.
    """
    best = ranked[0]
    cheaper = sorted((r for r in ranked[1:] if cost(r) < cost(best)), key=cost)  # stable: dev order breaks ties
    for r in cheaper:
        lb = noninferiority_bound(r, best, predictions, select_split)
        if lb is not None and lb > -margin:
            return Pick(r, best, margin, lb)
    return Pick(best, best, margin)


def _pts(x: float) -> str:
    return f"{100 * x:.1f}".replace("-", "−")


def choice_text(pick: Pick, cheaper: str, label: Callable[[Row], str], select_split: str = SELECTION_SPLIT) -> str:
    """The answer's reason in words: `best on dev`, or e.g. `faster, within 1 pt of X on dev (lower bound −0.4 pt)`."""
    if not pick.preferred or pick.lower_bound is None:
        return f"best on {select_split}"
    return (f"{cheaper}, within {100 * pick.margin:g} pt of {label(pick.best)} on {select_split} "
            f"(lower bound {_pts(pick.lower_bound)} pt)")


def _pick_fields(pick: Pick, cheaper: str, label: Callable[[Row], str], select_split: str) -> dict[str, Any]:
    return {"preferred_over": label(pick.best) if pick.preferred else None, "margin": pick.margin,
            f"{select_split}_lower_bound": pick.lower_bound, "choice": choice_text(pick, cheaper, label, select_split)}


def _runner_up_fields(best: Row, ranked: Sequence[Row], compare: Comparator, report_split: str,
                      label: Callable[[Row], str], metric: str = "accuracy") -> dict[str, Any]:
    """How the pick (`best`, ranked[0]) compares with the next one the selection split ranks, on the report split."""
    out: dict[str, Any] = {"runner_up": None, f"runner_up_{metric}": None, "vs_runner_up": None,
                           "vs_runner_up_p": None, "within_noise": None, "mark": ""}
    if len(ranked) < 2:
        out["mark"] = "only candidate"
        return out
    ru = ranked[1]
    out.update({"runner_up": label(ru), f"runner_up_{metric}": score(ru, report_split, metric)})
    cmp_ = compare(best, ru, report_split)
    if cmp_ is None:
        out["mark"] = "no paired test (predictions missing)"
        return out
    out.update(vs_runner_up=cmp_.outcome, vs_runner_up_p=cmp_.p_value,
               within_noise=None if cmp_.outcome == "not tested" else cmp_.outcome == "within noise")
    p = p_text(cmp_.p_value)
    out["mark"] = {"within noise": f"≈ runner-up ({p})",
                   "won": f"beats runner-up ({p})",
                   "lost": f"runner-up better on {report_split} ({p})",
                   "not tested": f"not tested (n = {getattr(cmp_, 'n', '?')}, too few to compare)"}[cmp_.outcome]
    return out


def storage_answers(
    variants: Sequence[Row],
    budgets_mb: Sequence[float] | None,
    predictions: Predictions | None = None,
    *,
    select_split: str = SELECTION_SPLIT,
    report_split: str = REPORT_SPLIT,
    metric: str = "accuracy",
    compare: Comparator | None = None,
    margin: float = NONINFERIORITY_MARGIN,
) -> list[Row]:
    """For each storage budget (MB; None = five geometric budgets over the variants' range): among the
    variants whose `storage_bytes` fit, the one whose `select_split` accuracy is best (ties: the smaller),
    unless a smaller one is shown on `select_split` to lose at most `margin` of accuracy (`prefer_cheaper`:
    the smallest such), reported with its `report_split` accuracy and interval. With `predictions`, the
    pick is compared with its runner-up (the selection split's best other than the pick: the dev-best when
    a smaller row replaced it) on the report split by a paired test; `within_noise` marks picks the report
    split cannot tell from their runner-up.

    Rows need `variant`, `storage_bytes`, `<split>_accuracy` (and `<split>_accuracy_ci`, `predictions`
    when present). Returns one dict per budget: budget_mb, variant, model, compression, storage_mb,
    `<select_split>_accuracy`, `<report_split>_accuracy`, `<report_split>_accuracy_ci`, and for accuracy
    preferred_over (the dev-best a smaller row replaced, else None), margin, `<select_split>_lower_bound`
    (of the pick's accuracy minus the dev-best's, None for the dev-best itself), choice (the reason in
    words); then runner_up, runner_up_accuracy, vs_runner_up ("won" | "lost" | "within noise" | None),
    vs_runner_up_p, within_noise, mark (short text for the table). The variant is None when nothing fits.

    Another family passes its `metric` field (`bleu`: rows carry `<split>_bleu`, `<split>_bleu_ci` and the
    answer's keys are named after it) and its `compare` (default: `paired` on `predictions`). Only
    `metric="accuracy"` prefers a smaller row: a BLEU answer is the dev-best, as before.
    """
    if compare is None:
        def compare(a: Row, b: Row, split: str) -> Any:
            return paired(a, b, predictions, split)
    pts = usable_variants(variants, select_split, report_split, metric=metric)
    if not pts:
        return []
    if budgets_mb:
        budgets = [b * 1e6 for b in budgets_mb]
    else:
        budgets = geometric_budgets(min(map(_storage, pts)), max(map(_storage, pts)), 5)
    out = []
    for b in budgets:
        ranked = rank([r for r in pts if _storage(r) <= b], _storage, select_split, metric)
        pick = None
        if ranked:
            pick = (prefer_cheaper(ranked, _storage, predictions, select_split, margin) if metric == "accuracy"
                    else Pick(ranked[0], ranked[0], margin))
        best = pick.row if pick else None
        row: Row = {
            "budget_mb": b / 1e6,
            "variant": best["variant"] if best else None,
            "model": best.get("model") if best else None,
            "compression": compression_label(best) if best else None,
            "storage_mb": _storage(best) / 1e6 if best else None,
            f"{select_split}_{metric}": score(best, select_split, metric) if best else None,
            f"{report_split}_{metric}": score(best, report_split, metric) if best else None,
            f"{report_split}_{metric}_ci": best.get(f"{report_split}_{metric}_ci") if best else None,
            "candidates": len(ranked),
        }
        if pick and best:
            if metric == "accuracy":
                row.update(_pick_fields(pick, "smaller", _variant_label, select_split))
            row.update(_runner_up_fields(best, _pick_first(best, ranked), compare, report_split, _variant_label, metric))
        out.append(row)
    return out


def _variant_label(r: Row) -> str:
    return str(r["variant"])


def _pick_first(pick: Row, ranked: Sequence[Row]) -> list[Row]:
    """`ranked` with the pick moved first, so its runner-up is the selection split's best other row."""
    return [pick, *(r for r in ranked if r is not pick)]


def timed_rows(bench: Sequence[Row], batch: int | None = None, split: str = SELECTION_SPLIT) -> list[Row]:
    """Bench rows with a p50 latency and an accuracy on `split` (optionally at one batch size)."""
    return [
        r for r in bench
        if r.get("status") == "ok" and r.get("latency_ms_p50") is not None and r.get(f"{split}_accuracy") is not None
        and (batch is None or r.get("batch") == batch)
    ]


def _latency(r: Row) -> float:
    return float(r["latency_ms_p50"])


def _backend_label(r: Row) -> str:
    # A GPU device is named (ONNX Runtime rows exist on cpu, cuda and tensorrt providers); CPU rows read as before.
    device = f" {r['device']}" if r.get("device") not in (None, "cpu") else ""
    return f"{r['variant']} {r.get('format')} {r.get('backend')}{device} {r.get('dtype')}"


def latency_answers(
    bench: Sequence[Row],
    budgets_ms: Sequence[float] | None,
    predictions: Predictions | None = None,
    *,
    select_split: str = SELECTION_SPLIT,
    report_split: str = REPORT_SPLIT,
    margin: float = NONINFERIORITY_MARGIN,
) -> tuple[int | None, list[Row]]:
    """For each p50 latency budget (ms; None = four geometric budgets over the measured range), at the
    smallest timed batch: the (variant, format, backend, dtype) row whose `select_split` accuracy is
    best among those within budget (ties: the faster), unless a faster one is shown on `select_split` to
    lose at most `margin` of accuracy (`prefer_cheaper`: the fastest such), reported on `report_split`,
    with the same preference and runner-up fields as `storage_answers`. Rows need `latency_ms_p50`,
    `batch`, `status` == "ok" and both split accuracies (and `predictions` for the paired comparisons).
    Returns (batch, one dict per budget: budget_ms, variant, format, backend, dtype, latency_ms_p50, the
    two accuracies, `<report_split>_accuracy_ci`, the preference fields and the runner-up fields)."""
    timed = [r for r in timed_rows(bench, split=select_split) if _ok(accuracy(r, report_split))]
    if not timed:
        return None, []
    batch = min(r["batch"] for r in timed)
    pts = [r for r in timed if r.get("batch") == batch]
    lat = [float(r["latency_ms_p50"]) for r in pts]
    budgets = list(budgets_ms) if budgets_ms else geometric_budgets(min(lat), max(lat), 4)
    out = []
    for b in budgets:
        ranked = rank([r for r in pts if _latency(r) <= b], _latency, select_split)
        pick = prefer_cheaper(ranked, _latency, predictions, select_split, margin) if ranked else None
        best = pick.row if pick else None
        row: Row = {
            "budget_ms": b,
            "variant": best["variant"] if best else None,
            "format": best.get("format") if best else None,
            "backend": best.get("backend") if best else None,
            # ONNX Runtime runs on cpu, cuda or tensorrt providers: the same backend name, another device
            "device": best.get("device") if best else None,
            "dtype": best.get("dtype") if best else None,
            "latency_ms_p50": best["latency_ms_p50"] if best else None,
            f"{select_split}_accuracy": accuracy(best, select_split) if best else None,
            f"{report_split}_accuracy": accuracy(best, report_split) if best else None,
            f"{report_split}_accuracy_ci": best.get(f"{report_split}_accuracy_ci") if best else None,
            "candidates": len(ranked),
        }
        if pick and best:
            row.update(_pick_fields(pick, "faster", _backend_label, select_split))
            row.update(_runner_up_fields(best, _pick_first(best, ranked), lambda a, b_, s: paired(a, b_, predictions, s),
                                         report_split, _backend_label))
        out.append(row)
    return batch, out


@dataclass
class Verdict:
    """Did the largest model, compressed, beat the smallest lightly compressed one at <= its storage?

    Definition. S = the size with the fewest parameters, L = the size with the most. S's reference
    is its *lightly compressed* variant: the compressed variant (sparsity > 0 or bits < 32) with the
    most storage bytes, i.e. the mildest compression (the dense model if S has no compressed
    variant). Among L's variants with storage_bytes <= the reference's, dev accuracy picks the
    witness (ties: the smaller). Witness and reference are then compared on the test split, on the
    same examples: exact McNemar test (two-sided, alpha 0.05) decides "won", "lost" or "within
    noise"; the 95 % exact conditional interval of the accuracy difference (it excludes 0 exactly when
    the test rejects) and 95 % Wilson intervals of both accuracies are shown. Without a variant of L
    that fits, or without per-example predictions, the claim is not tested (undecided). It is not
    decided either when the witness or the reference did not learn the task (not significantly above
    the majority class), or when either significantly beats its own uncompressed model on the test
    split (its recovery finetuning, not compression, made the difference: a training effect).
    """

    decided: bool
    won: bool
    sentence: str
    reference: dict[str, Any] | None = None
    witness: dict[str, Any] | None = None
    outcome: stats.Outcome | None = None  # "won" | "lost" | "within noise"; None when undecided
    comparison: stats.PairedComparison | None = None  # witness (A) against reference (B)
    split: str = REPORT_SPLIT  # where the comparison was made


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not _ok(x) else f"{100 * x:.1f} %"


def _acc_ci(r: Row, split: str) -> str:
    ci = r.get(f"{split}_accuracy_ci")
    base = _pct(accuracy(r, split))
    return base if not ci else f"{base} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _describe(r: Row) -> str:
    return f"{r['model']} at {compression_label(r)} ({r['variant']}, {_storage(r) / 1e6:.2f} MB)"


@dataclass
class VerdictPair:
    """Who the verdict compares (`Verdict`'s definition): the reference of the smallest size and the
    witness of the largest, chosen on the selection split; `reason` says why there is no pair."""

    small: str | None = None
    large: str | None = None
    reference: Row | None = None
    candidates: list[Row] | None = None  # the largest size's variants within the reference's storage
    witness: Row | None = None
    reason: str | None = None  # "one size" | "nothing fits"


def verdict_pair(
    variants: Sequence[Row],
    *,
    select_split: str = SELECTION_SPLIT,
    report_split: str = REPORT_SPLIT,
    metric: str = "accuracy",
) -> VerdictPair:
    """The reference (smallest size, mildest compression) and the witness (largest size, best
    `<select_split>_<metric>` within the reference's storage) of `Verdict`'s definition, for any family."""
    pts = usable_variants(variants, select_split, report_split, metric=metric)
    sizes: dict[str, int] = {}
    for r in pts:
        sizes[r["model"]] = max(sizes.get(r["model"], 0), int(r.get("params") or 0))
    if len(sizes) < 2:
        return VerdictPair(reason="one size")
    small = min(sizes, key=lambda m: (sizes[m], m))
    large = max(sizes, key=lambda m: (sizes[m], m))
    small_rows = [r for r in pts if r["model"] == small]
    compressed = [r for r in small_rows if float(r.get("sparsity") or 0) > 0 or int(r.get("bits") or 32) < 32]
    ref = max(compressed or small_rows, key=lambda r: (_storage(r), str(r["variant"])))
    cands = [r for r in pts if r["model"] == large and _storage(r) <= _storage(ref)]
    if not cands:
        return VerdictPair(small, large, ref, [], reason="nothing fits")
    return VerdictPair(small, large, ref, cands, rank(cands, _storage, select_split, metric)[0])


HEADS = {"won": "Yes: train large, then compress won", "lost": "No: train large, then compress lost",
         "within noise": "Within noise: train large, then compress neither won nor lost"}


@dataclass(frozen=True)
class VerdictText:
    """What a family's verdict says; the rules (`verdict`) are the same for every family.

    `result(head, witness, reference, comparison, pair, reference_text, select_split, report_split)` is the
    measured sentence; `baseline` says what a model that did not learn is no better than (`undecided_because`,
    with `unit` and `scale` for the training-effect text); `budget` names the training that may have been
    too short; `no_paired_test` is formatted with `split`, `witness` and `reference`; `no_usable` (formatted
    with `select` and `report`), when given, is said when no variant has both splits' scores;
    `not_tested(comparison, report_split)`, when given, is said for a comparison whose outcome is "not tested"."""

    one_size: str
    describe: Callable[[Row], str]
    no_paired_test: str
    result: Callable[..., str]
    baseline: Callable[[Row, str], str]
    budget: str
    unit: str = "points"
    scale: float = 100.0
    no_usable: str | None = None
    not_tested: Callable[[Any, str], str] | None = None


def verdict(variants: Sequence[Row], compare: Comparator, text: VerdictText, *, select_split: str = SELECTION_SPLIT,
            report_split: str = REPORT_SPLIT, metric: str = "accuracy") -> Verdict:
    """`Verdict`'s definition for any family: `compare` pairs witness and reference on `report_split`,
    `metric` is the row field dev selects on."""
    pair = verdict_pair(variants, select_split=select_split, report_split=report_split, metric=metric)
    if text.no_usable is not None and not usable_variants(variants, select_split, report_split, metric=metric):
        return Verdict(False, False, text.no_usable.format(select=select_split, report=report_split), split=report_split)
    if pair.reason == "one size":
        return Verdict(False, False, text.one_size, split=report_split)
    ref = pair.reference
    assert ref is not None
    ref_txt = f"the smallest model {text.describe(ref)}"
    if pair.witness is None:
        return Verdict(False, False, (
            f"Not tested: no variant of the largest model {pair.large} fits in the storage of {ref_txt}; compress "
            f"{pair.large} harder (lower bits, higher sparsity) to make the comparison."), ref, None, split=report_split)
    w = pair.witness
    c = compare(w, ref, report_split)
    if c is None:
        return Verdict(False, False, text.no_paired_test.format(split=report_split, witness=w["variant"],
                                                                reference=ref["variant"]), ref, w, split=report_split)
    if text.not_tested is not None and c.outcome == "not tested":
        return Verdict(False, False, text.not_tested(c, report_split), ref, w, split=report_split)
    sentence = text.result(HEADS[c.outcome], w, ref, c, pair, ref_txt, select_split, report_split)
    if c.outcome != "won":
        sentence += f" With a short {text.budget} budget the large model may simply be undertrained."
    undecided = undecided_because(w, ref, variants, compare, report_split, text.baseline(ref, report_split),
                                  text.unit, text.scale)
    if undecided:
        return Verdict(False, False, f"Not decided: {undecided}. Measured anyway: {sentence[0].lower()}{sentence[1:]}",
                       ref, w, split=report_split)
    return Verdict(True, c.outcome == "won", sentence, ref, w, c.outcome, c, report_split)


def _classification_result(head: str, w: Row, ref: Row, c: stats.PairedComparison, pair: VerdictPair, ref_txt: str,
                           select_split: str, report_split: str) -> str:
    return (
        f"{head} on the {report_split} split (n = {c.n}). The largest model {_describe(w)}, chosen on "
        f"{select_split} among its {len(pair.candidates or [])} variant(s) within the reference's storage, scores "
        f"{_acc_ci(w, report_split)}; {ref_txt} scores {_acc_ci(ref, report_split)} (95 % Wilson intervals). "
        f"Difference {100 * c.diff:+.1f} points, 95 % exact conditional interval [{100 * c.diff_ci_low:+.1f}, "
        f"{100 * c.diff_ci_high:+.1f}]; exact McNemar test on the {c.only_a} + {c.only_b} examples only one "
        f"of them gets right: p = {c.p_value:.3g}. The large variant uses {_storage(w) / _storage(ref):.2f}× the "
        f"reference's storage ({select_split}: {_pct(accuracy(w, select_split))} vs {_pct(accuracy(ref, select_split))})."
    )


CLASSIFICATION_VERDICT = VerdictText(
    one_size="Not tested: only one model size has results, so large vs. small cannot be compared on this run.",
    describe=_describe,
    no_paired_test="Not tested: per-example {split} predictions of {witness} or {reference} are missing, so no paired "
                   "test can be made; rerun the compress stage.",
    result=_classification_result,
    baseline=lambda ref, split: "not significantly above always answering the majority class",
    budget="pretraining",
)


def train_large_verdict(
    variants: Sequence[Row],
    predictions: Predictions | None = None,
    *,
    select_split: str = SELECTION_SPLIT,
    report_split: str = REPORT_SPLIT,
) -> Verdict:
    """The verdict defined in `Verdict`'s docstring, from compress variant rows and their predictions."""
    return verdict(variants, lambda a, b, split: paired(a, b, predictions, split), CLASSIFICATION_VERDICT,
                   select_split=select_split, report_split=report_split)


def undecided_because(w: Row, ref: Row, variants: Sequence[Row], compare: Comparator, split: str,
                      baseline: str, unit: str = "points", scale: float = 100.0) -> str | None:
    """Why the verdict's pair cannot decide (a model that did not learn, a training effect), or None."""
    weak = [r["variant"] for r in (w, ref) if r.get("learned_task") is False]
    if weak:
        return (f"{' and '.join(weak)} did not learn the task ({baseline}), so comparing "
                f"{'it' if len(weak) == 1 else 'them'} says nothing about compression; train longer")
    for r in (w, ref):
        base = own_uncompressed(r, variants)
        if base is None or not is_compressed(r):
            continue
        c = compare(r, base, split)
        if c is not None and c.outcome == "won":
            return training_effect_text(r, base, c, split, unit, scale)
    return None
