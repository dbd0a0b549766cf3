"""Finetuning of pretrained classifiers: tokenization, the training loop (also used for pruning
recovery), accuracy evaluation, and checkpoint loading/saving."""

from tlc_export.finetune.batching import Encoded, encode_examples
from tlc_export.finetune.evaluate import evaluate_accuracy
from tlc_export.finetune.model import (
    load_classifier,
    load_tokenizer,
    quiet_transformers,
    save_classifier,
)
from tlc_export.finetune.train import StopRule, TrainResult, TrainSettings, finetune_

__all__ = [
    "Encoded",
    "StopRule",
    "TrainResult",
    "TrainSettings",
    "encode_examples",
    "evaluate_accuracy",
    "finetune_",
    "load_classifier",
    "load_tokenizer",
    "quiet_transformers",
    "save_classifier",
]
