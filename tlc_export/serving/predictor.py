"""Class probabilities for texts, from a bundle: tokenizers → length-sorted batches → ONNX Runtime."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlc_export.export.session import session as export_session
from tlc_export.serving.bundle import FIX, Bundle, BundleError
from tlc_export.tokens import (
    DEFAULT_BATCH_SIZE,
    ServingTokenizer,
    TokenizerError,
    length_batches,
    pad_batch,
)

INPUTS = ("input_ids", "attention_mask")


def session(path: str, threads: int | None = None) -> Any:
    """The CPU InferenceSession the export stage scores files with (`tlc_export.export.session`)."""
    return export_session(path, threads)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Predictions:
    """Per input, in input order: logits, probabilities and the argmax label id."""

    logits: np.ndarray  # float32 [n, labels]
    probabilities: np.ndarray  # float64 [n, labels]
    label_ids: np.ndarray  # int64 [n]


class Predictor:
    """Runs one bundle. `batch_size` rows per `session.run`, batched by length."""

    def __init__(self, bundle: Bundle, batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None) -> None:
        self.bundle = bundle
        self.batch_size = batch_size
        try:
            self.tokenizer = ServingTokenizer.from_dir(bundle.root, bundle.max_length)
        except TokenizerError as e:
            raise BundleError(f"{e}; {FIX}") from e
        try:
            self.session = session(str(bundle.model_path), threads)
        except Exception as e:  # ORT raises its own exception types for unreadable or invalid models
            raise BundleError(f"{bundle.model_path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:300]}); {FIX}") from e
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(INPUTS):
            raise BundleError(f"{bundle.model_path}: graph inputs are {names}, expected {list(INPUTS)}; {FIX}")
        self.output = self.session.get_outputs()[0].name

    def logits(self, texts: Sequence[str], pairs: Sequence[str | None] | None = None) -> np.ndarray:
        """Logits `[len(texts), labels]` in input order."""
        ids = self.tokenizer.encode(texts, pairs)
        out = np.zeros((len(ids), len(self.bundle.labels)), dtype=np.float32)
        for index in length_batches([len(x) for x in ids], self.batch_size):
            input_ids, mask = pad_batch(ids, index, self.tokenizer.pad_id)
            out[index] = self.session.run([self.output], {"input_ids": input_ids, "attention_mask": mask})[0]
        return out

    def predict(self, texts: Sequence[str], pairs: Sequence[str | None] | None = None) -> Predictions:
        logits = self.logits(texts, pairs)
        probs = softmax(logits)
        # argmax of the float32 logits, as the export stage scores every file
        return Predictions(logits, probs, logits.argmax(axis=-1).astype(np.int64))
