"""Paired tests between translation models, and the report's verdict with the classification report's rules.

Dev selects (the reference's and witness's variants, every answer's pick), test reports: two models'
test translations of the same sentences are compared by `tlc_export.tasks.translation.metrics.compare_translations`
(a paired permutation test over sentences decides with the paired-bootstrap interval of the BLEU
difference, corpus BLEU recomputed per resample): "won" when both put A ahead, "lost" when both put it
behind, "within noise" otherwise, "not tested" on fewer than 20 sentences. No "won" inside the noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tlc_export.report.answers import (
    Row,
    Verdict,
    VerdictText,
    p_text,
    rank,
    score,
    usable_variants,
    verdict,
)
from tlc_export.report.data import compression_label
from tlc_export.report.pareto import geometric_budgets
from tlc_export.scoring import REPORT_SPLIT, SELECTION_SPLIT
from tlc_export.tasks.translation.metrics import (
    MIN_SENTENCES,
    TranslationComparison,
    compare_translations,
)
from tlc_export.tasks.translation.report.data import TranslationReportData

METRIC = "bleu"

DEFINITION = (
    "Did the largest model, compressed, beat the smallest lightly compressed one at <= its storage? "
    "S = the size with the fewest parameters, L = the size with the most. S's reference is its lightly compressed "
    "variant: the compressed variant (sparsity > 0 or bits < 32) with the most storage bytes (the dense model if S "
    "has no compressed variant). Among L's variants with storage_bytes <= the reference's, dev BLEU picks the witness "
    "(ties: the smaller). Witness and reference are compared on the test split, on the same sentences: a paired "
    "permutation test (1,000 swaps of the two systems' translations, two-sided) and a paired bootstrap over sentences "
    "(1,000 resamples, corpus BLEU recomputed each time) giving a 95 % interval of the BLEU difference; \"won\" when "
    "p < 0.05 and the interval is above 0, \"lost\" when p < 0.05 and it is below 0, otherwise \"within noise\". "
    "Intervals of each BLEU are sacrebleu's bootstrap. Without a variant of L that fits, without the test "
    "translations of both, or with fewer than 20 test sentences, the claim is not tested; it is not decided when "
    "either model did not beat copying the source, or significantly beats its own uncompressed model (a training "
    "effect of recovery finetuning)."
)


class SentenceComparator:
    """`answers.Comparator` for translation rows: their `predictions` files' hypotheses of one split, paired
    over the same sentences; memoised, since the answer tables ask for the same pairs again."""

    def __init__(self, data: TranslationReportData, *, samples: int = 1000) -> None:
        self.data = data
        self.samples = samples
        self._done: dict[tuple[str, str, str], TranslationComparison | None] = {}

    def __call__(self, a: Row, b: Row, split: str) -> TranslationComparison | None:
        pa, pb = a.get("predictions"), b.get("predictions")
        if not pa or not pb:
            return None
        key = (str(pa), str(pb), split)
        if key not in self._done:
            self._done[key] = self._compare(pa, pb, split)
        return self._done[key]

    def _compare(self, pa: str, pb: str, split: str) -> TranslationComparison | None:
        ta, tb = self.data.predictions(pa), self.data.predictions(pb)
        sa, sb = (ta or {}).get(split), (tb or {}).get(split)
        # Only the same sentences, in the same order, pair: anything else is no paired test at all.
        if sa is None or sb is None or sa.references != sb.references or sa.sources != sb.sources or not sa.references:
            return None
        return compare_translations(sa.hypotheses, sb.hypotheses, sa.references, samples=self.samples)


def storage_mb(r: Row) -> float:
    return float(r["storage_bytes"]) / 1e6


def bleu_ci(r: Row | None, split: str) -> str:
    """`12.34 [11.02, 13.70]`: a row's BLEU on `split` with its interval."""
    if r is None:
        return "n/a"
    v = score(r, split, METRIC)
    if v != v:
        return "n/a"
    ci = r.get(f"{split}_{METRIC}_ci")
    return f"{v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else " (no interval)")


def describe(r: Row) -> str:
    return f"{r['model']} at {compression_label(r)} ({r['variant']}, {storage_mb(r):.2f} MB)"


def _result(head: str, w: Row, ref: Row, c: Any, pair: Any, ref_txt: str, select_split: str, report_split: str) -> str:
    return (
        f"{head} on {report_split} (n = {c.n} sentences): {w['model']} at {compression_label(w)} ({storage_mb(w):.2f} MB) "
        f"scores BLEU {bleu_ci(w, report_split)} against {ref['model']} at {compression_label(ref)} "
        f"({storage_mb(ref):.2f} MB) {bleu_ci(ref, report_split)}, a difference of {c.diff:+.2f} BLEU with 95 % "
        f"paired-bootstrap interval [{c.diff_ci_low:+.2f}, {c.diff_ci_high:+.2f}]. "
        f"The witness {w['variant']} was chosen on {select_split} among the {len(pair.candidates or [])} variant(s) of the "
        f"largest model within the storage of {ref_txt} ({select_split} BLEU {bleu_ci(w, select_split)} vs "
        f"{bleu_ci(ref, select_split)}); it uses {float(w['storage_bytes']) / float(ref['storage_bytes']):.2f}× "
        f"the reference's storage; paired permutation test over sentences: two-sided {p_text(c.p_value)}."
    )


TRANSLATION_VERDICT = VerdictText(
    one_size="Not tested: only one model size has compressed variants with dev and test BLEU, so large vs. small "
             "cannot be compared on this run.",
    describe=describe,
    no_paired_test="Not tested: the {split} translations of {witness} or {reference} are missing or not of the same "
                   "sentences, so no paired test can be made; rerun the compress stage.",
    result=_result,
    baseline=lambda ref, split: ("not significantly above copying the source sentence as its translation, BLEU "
                                 f"{float(ref.get('copy_baseline_bleu') or 0):.2f} on {split}"),
    budget="training",
    unit="BLEU",
    scale=1.0,
    no_usable="Not tested: no compressed variant has {select} and {report} BLEU with its storage; run the compress stage.",
    not_tested=lambda c, split: (f"Not tested: the {split} split has {c.n} sentences; a BLEU comparison needs at least "
                                 f"{MIN_SENTENCES}."),
)


def translation_verdict(variants: Sequence[Row], compare: Any, *, select_split: str = SELECTION_SPLIT,
                        report_split: str = REPORT_SPLIT) -> Verdict:
    """`DEFINITION`, from compress variant rows; `compare` is a `SentenceComparator` (or any `answers.Comparator`)."""
    return verdict(variants, compare, TRANSLATION_VERDICT, select_split=select_split, report_split=report_split,
                   metric=METRIC)


def size_comparisons(variants: Sequence[Row], budgets_mb: Sequence[float] | None, compare: Any, *,
                     select_split: str = SELECTION_SPLIT, report_split: str = REPORT_SPLIT) -> list[Row]:
    """Per storage budget (MB; None = four geometric budgets over the variants' range): the largest and the
    smallest size's best variant within it (each chosen on `select_split`), compared on `report_split`
    by the paired bootstrap. Budgets where one of them has no variant that fits are left out."""
    pts = usable_variants(variants, select_split, report_split, metric=METRIC)
    sizes: dict[str, int] = {}
    for r in pts:
        sizes[r["model"]] = max(sizes.get(r["model"], 0), int(r.get("params") or 0))
    if len(sizes) < 2:
        return []
    small = min(sizes, key=lambda m: (sizes[m], m))
    large = max(sizes, key=lambda m: (sizes[m], m))
    cost = [float(r["storage_bytes"]) for r in pts]
    budgets = [b * 1e6 for b in budgets_mb] if budgets_mb else geometric_budgets(min(cost), max(cost), 4)
    out = []
    for b in budgets:
        picks = {}
        for m in (large, small):
            ranked = rank([r for r in pts if r["model"] == m and float(r["storage_bytes"]) <= b],
                          lambda r: float(r["storage_bytes"]), select_split, METRIC)
            picks[m] = ranked[0] if ranked else None
        lg, sm = picks[large], picks[small]
        if lg is None or sm is None:
            continue
        c = compare(lg, sm, report_split)
        out.append({
            "budget_mb": b / 1e6, "large": lg["variant"], "large_storage_mb": storage_mb(lg),
            f"large_{report_split}_{METRIC}": score(lg, report_split, METRIC),
            f"large_{report_split}_{METRIC}_ci": lg.get(f"{report_split}_{METRIC}_ci"),
            "small": sm["variant"], "small_storage_mb": storage_mb(sm),
            f"small_{report_split}_{METRIC}": score(sm, report_split, METRIC),
            f"small_{report_split}_{METRIC}_ci": sm.get(f"{report_split}_{METRIC}_ci"),
            "diff": None if c is None else c.diff,
            "diff_ci": None if c is None else [c.diff_ci_low, c.diff_ci_high],
            "outcome": "no paired test (translations missing)" if c is None else c.outcome,
        })
    return out
