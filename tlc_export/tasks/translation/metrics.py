"""BLEU and chrF with sacrebleu on detokenized text (its standard 13a tokenization), with the
signature that makes a score reproducible and sacrebleu's bootstrap interval over sentences.

The paper reports tokenized BLEU with compound splitting (Tensor2Tensor's); we report sacrebleu's,
the standard that can be compared across papers: the numbers are not the paper's scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tlc_export.tasks.base import Metric

# The score the family selects on (dev) and reports (test).
METRIC = Metric(field="bleu", label="BLEU", scale=100.0)
ALPHA = 0.05
BLEU_TOKENIZE = "13a"
BOOTSTRAP_RESAMPLES = 1000
INTERVAL_METHOD = (f"sacrebleu bootstrap over sentences ({BOOTSTRAP_RESAMPLES} resamples, SACREBLEU_SEED or 12345): "
                   "mean ± half the width of the 95 % percentile interval")


@dataclass(frozen=True)
class TranslationPredictions:
    """One split's translations, aligned with its sources and references (what BLEU and a paired
    bootstrap between two models are computed from)."""

    sources: list[str]
    references: list[str]
    hypotheses: list[str]


@dataclass(frozen=True)
class TranslationScore:
    bleu: float
    chrf: float
    n: int
    bleu_signature: str
    chrf_signature: str
    bleu_ci: list[float] | None = None  # [low, high], when bootstrapped
    chrf_ci: list[float] | None = None
    bleu_detail: str = ""  # sacrebleu's line: n-gram precisions, brevity penalty, lengths

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _interval(score: object) -> list[float] | None:
    mean, half = getattr(score, "_mean", None), getattr(score, "_ci", None)
    if mean is None or half is None or half < 0:
        return None
    return [float(mean) - float(half), float(mean) + float(half)]


def score_translations(hypotheses: Sequence[str], references: Sequence[str], *,
                       bootstrap: int = BOOTSTRAP_RESAMPLES) -> TranslationScore:
    """Corpus BLEU (13a) and chrF of detokenized hypotheses against one reference each."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        raise ValueError("cannot score an empty split")
    hyps, refs = list(hypotheses), [list(references)]
    n_bs = bootstrap if bootstrap > 1 and len(hyps) > 1 else 1
    bleu, chrf = BLEU(tokenize=BLEU_TOKENIZE), CHRF()
    b = bleu.corpus_score(hyps, refs, n_bootstrap=n_bs)
    c = chrf.corpus_score(hyps, refs, n_bootstrap=n_bs)
    return TranslationScore(
        bleu=float(b.score), chrf=float(c.score), n=len(hyps),
        bleu_signature=str(bleu.get_signature()), chrf_signature=str(chrf.get_signature()),
        bleu_ci=_interval(b) if n_bs > 1 else None, chrf_ci=_interval(c) if n_bs > 1 else None,
        bleu_detail=str(b),
    )


MIN_SENTENCES = 20
"""Below this many sentences two systems are "not tested": a percentile bootstrap over a handful of
sentences claims more than they hold (one sentence used to decide "won")."""


@dataclass(frozen=True)
class TranslationComparison:
    """System A against system B on the same sentences. `outcome` is A's: "won" when the paired
    permutation test rejects (two-sided p < 0.05) and the whole 95 % bootstrap interval of
    BLEU(A) − BLEU(B) is above 0, "lost" when both say below, "within noise" otherwise, and "not
    tested" on fewer than `MIN_SENTENCES` sentences.

    Why both: the percentile bootstrap alone is anti-conservative for corpus BLEU (simulated
    false-positive rate 10 % at 20 sentences, 7 % at 100; tests/unit/test_calibration.py); the
    permutation test is exact under "the systems are exchangeable", and requiring the interval too
    means a shown interval never contradicts a decided outcome."""

    outcome: str
    bleu_a: float
    bleu_b: float
    diff: float
    diff_ci_low: float
    diff_ci_high: float
    p_value: float  # two-sided, paired approximate randomization (Riezler & Maxwell 2005)
    n: int
    test: str = ("paired approximate randomization over sentences (two-sided p, alpha 0.05) decides, together with the "
                 "95 % paired-bootstrap percentile interval (Koehn 2004) shown: both must exclude 0")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def sentence_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> Any:
    """Per-sentence BLEU sufficient statistics, float64 [n, 10]: matches (1–4-grams), totals (1–4-grams),
    hypothesis length, reference length (sacrebleu's, 13a). Corpus BLEU is a function of their sums."""
    import numpy as np
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize=BLEU_TOKENIZE, effective_order=True)  # counts are the same; no sentence-BLEU warning
    rows = []
    for h, r in zip(hypotheses, references, strict=True):
        s = bleu.sentence_score(h, [r])
        rows.append([*s.counts, *s.totals, s.sys_len, s.ref_len])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 10)


def bleu_from_statistics(summed: Any) -> float:
    """Corpus BLEU (sacrebleu's, exp smoothing as in `corpus_score`) from summed sentence statistics."""
    from sacrebleu.metrics import BLEU

    v = [int(round(x)) for x in summed]
    return float(BLEU.compute_bleu(v[0:4], v[4:8], v[8], v[9], smooth_method="exp").score)


def bleu_from_statistics_batch(summed: Any) -> Any:
    """`bleu_from_statistics` of every row of `summed` [samples, 10] at once (NumPy): the same formula —
    brevity penalty, exp smoothing of n-gram orders without a match (each one halves the next
    smoothed precision), 0 when nothing matches or an order has no n-grams at all."""
    import numpy as np

    s = np.asarray(summed, dtype=np.float64).reshape(-1, 10)
    correct, total, sys_len, ref_len = s[:, 0:4], s[:, 4:8], s[:, 8], s[:, 9]
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(sys_len < ref_len, np.where(sys_len > 0, np.exp(1 - ref_len / np.where(sys_len > 0, sys_len, 1)), 0.0), 1.0)
        zero = correct == 0
        smoothed = 100.0 / (2.0 ** np.cumsum(zero, axis=1) * np.maximum(total, 1))
        precision = np.where(zero, smoothed, 100.0 * correct / np.maximum(total, 1))
        score = bp * np.exp(np.log(precision).mean(axis=1))
    every_order = (total > 0).all(axis=1)
    return np.where(every_order & (correct.sum(axis=1) > 0), score, 0.0)


def compare_translations(hyps_a: Sequence[str], hyps_b: Sequence[str], references: Sequence[str], *,
                         samples: int = BOOTSTRAP_RESAMPLES, seed: int = 12345) -> TranslationComparison:
    """Paired bootstrap of the corpus-BLEU difference between two systems' translations of the same sentences."""
    if not (len(hyps_a) == len(hyps_b) == len(references)) or not references:
        raise ValueError(f"need the same non-empty sentences: {len(hyps_a)}, {len(hyps_b)} hypotheses, "
                         f"{len(references)} references")
    return compare_statistics(sentence_statistics(hyps_a, references), sentence_statistics(hyps_b, references),
                              samples=samples, seed=seed)


def compare_statistics(stats_a: Any, stats_b: Any, *, samples: int = BOOTSTRAP_RESAMPLES, seed: int = 12345,
                       min_sentences: int = MIN_SENTENCES) -> TranslationComparison:
    """`compare_translations` from per-sentence BLEU statistics [n, 10] of both systems (same sentences).

    Each resample draws n sentences with replacement (the same ones for A and B); its corpus BLEUs are
    those of the summed statistics, so a resample is one matrix product. Fewer than `min_sentences`
    sentences: outcome "not tested" (the interval and p are still computed, and shown, not used).
    """
    import numpy as np

    sa, sb = np.asarray(stats_a, dtype=np.float64), np.asarray(stats_b, dtype=np.float64)
    if sa.shape != sb.shape or sa.ndim != 2 or sa.shape[1] != 10 or sa.shape[0] == 0:
        raise ValueError(f"need per-sentence statistics [n, 10] of the same sentences, got {sa.shape} and {sb.shape}")
    n = sa.shape[0]
    bleu_a, bleu_b = bleu_from_statistics(sa.sum(0)), bleu_from_statistics(sb.sum(0))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    # Each resample as how often it draws each sentence: its summed statistics are one matrix product.
    weights = np.zeros((samples, n))
    np.add.at(weights, (np.arange(samples)[:, None], idx), 1.0)
    diffs = bleu_from_statistics_batch(weights @ sa) - bleu_from_statistics_batch(weights @ sb)
    low, high = (float(x) for x in np.percentile(diffs, [2.5, 97.5]))
    # Approximate randomization: under "A and B are exchangeable" each sentence's two translations
    # may swap systems; the share of swaps at least as far from 0 as the observed difference is p.
    swap = rng.integers(0, 2, size=(samples, n)).astype(np.float64) @ (sa - sb)
    base_a, base_b = sa.sum(0), sb.sum(0)
    perm = bleu_from_statistics_batch(base_a - swap) - bleu_from_statistics_batch(base_b + swap)
    observed = abs(bleu_a - bleu_b)
    p = float((1 + np.sum(np.abs(perm) >= observed - 1e-9)) / (samples + 1))
    if n < min_sentences:
        outcome = "not tested"
    elif p < ALPHA and low > 0:
        outcome = "won"
    elif p < ALPHA and high < 0:
        outcome = "lost"
    else:
        outcome = "within noise"
    return TranslationComparison(outcome, bleu_a, bleu_b, bleu_a - bleu_b, low, high, p, n)
