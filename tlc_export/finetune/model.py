"""Load a sequence classifier from a pretrained masked-LM checkpoint, and save one atomically."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, RobertaPreLayerNormForSequenceClassification
from transformers.utils import logging as hf_logging

from tlc_export import atomic
from tlc_export.errors import StageError


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence the load report and progress bars: an MLM checkpoint loaded as a classifier always lists the lm_head as
    unexpected and the new classifier as missing, which is exactly what finetuning wants."""
    old = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # per-shard load/save bars: noise for models this small
    root = logging.getLogger("transformers")
    old_root = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(old)
        root.setLevel(old_root)
        if bars:
            hf_logging.enable_progress_bar()


def _require(path: Path, what: str) -> None:
    if not (path / "config.json").exists():
        raise StageError(
            f"{path}: no {what} here (config.json missing); run the upstream stage first "
            "(`tlc run` resumes it) or point the run directory at a finished run"
        )


def load_classifier(
    checkpoint: str | Path, num_labels: int | None = None, dropout: float | None = None
) -> RobertaPreLayerNormForSequenceClassification:
    """A RobertaPreLayerNormForSequenceClassification from `checkpoint` (an MLM or classifier folder).

    `num_labels` sizes a fresh classifier head; `dropout` overrides hidden, attention and classifier dropout.
    """
    checkpoint = Path(checkpoint)
    _require(checkpoint, "pretrained checkpoint")
    kw: dict[str, Any] = {}
    if num_labels is not None:
        kw["num_labels"] = num_labels
    if dropout is not None:
        kw.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, classifier_dropout=dropout)
    with quiet_transformers():
        model = RobertaPreLayerNormForSequenceClassification.from_pretrained(str(checkpoint), **kw)
    return model


def load_tokenizer(checkpoint: str | Path) -> Any:
    """The tokenizer saved next to a checkpoint (save_pretrained)."""
    with quiet_transformers():
        return AutoTokenizer.from_pretrained(str(checkpoint))


SELECTION_FILE = "selection.json"


def save_classifier(model: Any, tokenizer: Any, target: str | Path, selection: dict[str, Any] | None = None) -> None:
    """save_pretrained model + tokenizer into `target`, atomically (a reader never sees half a folder).

    `selection` (e.g. the finetune candidate the weights come from) is written beside them as
    `selection.json`, in the same atomic step, so the folder always says which candidate it holds.
    """
    with atomic_folder(target) as tmp, quiet_transformers():
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if selection is not None:
            atomic.write_json(tmp / SELECTION_FILE, selection)


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    with atomic.atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        yield tmp
