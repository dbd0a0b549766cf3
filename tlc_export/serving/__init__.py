"""Running a serving bundle (`tlc package`'s output) with ONNX Runtime, `tokenizers` and NumPy only.

Nothing in this package imports torch or transformers: `tlc predict` and a deployment need only
`pip install onnxruntime tokenizers numpy`. `tlc_export.tasks.open_predictor` opens any bundle with its
family's predictor (classification: `Predictor`; translation: `tasks/translation/serving/translator.py`). The
export stage measures accuracy with the same tokenizer and the same length-sorted batches
(`tlc_export.tokens`), so `tlc predict` on the task's test split reproduces the accuracy the run reports
for that file.
"""

from __future__ import annotations

from tlc_export.serving.bundle import BUNDLE_FILES, Bundle, BundleError
from tlc_export.serving.predictor import Predictions, Predictor
from tlc_export.tokens import ServingTokenizer, length_batches, pad_batch

__all__ = ["BUNDLE_FILES", "Bundle", "BundleError", "Predictions", "Predictor", "ServingTokenizer",
           "length_batches", "pad_batch"]
