"""Classification accuracy of a model on a list of examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tlc_export.finetune.batching import Encoded, collate, encode_examples, length_sorted_batches


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def predict_on_encoded(model: nn.Module, enc: Encoded, batch_size: int = 64) -> np.ndarray:
    """Predicted label of every example, in the order of `enc` (evaluated in length-sorted batches;
    restores the model's train/eval mode)."""
    if len(enc) == 0:
        raise ValueError("cannot predict on an empty split")
    was_training = model.training
    model.eval()
    device = model_device(model)
    out = np.empty(len(enc), dtype=np.int64)
    try:
        for index in length_sorted_batches(enc, batch_size):
            batch = collate(enc, index, device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            out[index] = logits.argmax(-1).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def accuracy_on_encoded(model: nn.Module, enc: Encoded, batch_size: int = 64) -> float:
    """Accuracy over pre-tokenized examples."""
    if len(enc) == 0:
        raise ValueError("cannot measure accuracy on an empty split")
    return float(np.mean(predict_on_encoded(model, enc, batch_size) == np.asarray(enc.labels)))


def evaluate_accuracy(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[Any],
    max_length: int,
    batch_size: int = 64,
) -> float:
    """Fraction of `examples` (tlc_export.data.Example) whose argmax logit equals the label."""
    return accuracy_on_encoded(model, encode_examples(tokenizer, examples, max_length), batch_size)


def predict_splits(
    model: nn.Module,
    tokenizer: Any,
    splits: dict[str, Sequence[Any]],
    max_length: int,
    batch_size: int = 64,
) -> dict[str, Any]:
    """`{split: SplitPredictions}` (predicted and gold labels in split order) for every named split."""
    from tlc_export.predictions import SplitPredictions

    out = {}
    for name, examples in splits.items():
        enc = encode_examples(tokenizer, examples, max_length)
        out[name] = SplitPredictions(predict_on_encoded(model, enc, batch_size), np.asarray(enc.labels, dtype=np.int64))
    return out
