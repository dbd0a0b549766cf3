"""BLEU and chrF with sacrebleu on detokenized text (its standard 13a tokenization), with the
signature that makes a score reproducible and sacrebleu's bootstrap interval over sentences.

The paper reports tokenized BLEU with compound splitting (Tensor2Tensor's); we report sacrebleu's,
the standard that can be compared across papers: the numbers are not the paper's scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

BLEU_TOKENIZE = "13a"
BOOTSTRAP_RESAMPLES = 1000
INTERVAL_METHOD = (f"sacrebleu bootstrap over sentences ({BOOTSTRAP_RESAMPLES} resamples, SACREBLEU_SEED or 12345): "
                   "mean ± half the width of the 95 % percentile interval")


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
