"""Classification accuracy of a model on a list of examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tlc_export.finetune.batching import Encoded, collate, encode_examples, length_sorted_batches


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def accuracy_on_encoded(model: nn.Module, enc: Encoded, batch_size: int = 64) -> float:
    """Accuracy over pre-tokenized examples (length-sorted batches; restores the model's train/eval mode)."""
    if len(enc) == 0:
        raise ValueError("cannot measure accuracy on an empty split")
    was_training = model.training
    model.eval()
    device = model_device(model)
    correct = 0
    try:
        for index in length_sorted_batches(enc, batch_size):
            batch = collate(enc, index, device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
    finally:
        model.train(was_training)
    return correct / len(enc)


def evaluate_accuracy(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[Any],
    max_length: int,
    batch_size: int = 64,
) -> float:
    """Fraction of `examples` (tlc_export.data.Example) whose argmax logit equals the label."""
    return accuracy_on_encoded(model, encode_examples(tokenizer, examples, max_length), batch_size)
