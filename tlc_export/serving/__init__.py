"""Running a serving bundle (`tlc package`'s output) with ONNX Runtime, `tokenizers` and NumPy only.

Nothing in this package imports torch or transformers: `tlc predict` and a deployment need only
`pip install onnxruntime tokenizers numpy`. `open_predictor` opens any bundle with its family's
predictor (classification: `Predictor`; translation: `serving.translation.Translator`). The export stage measures accuracy with the same
tokenizer and the same length-sorted batches (`tokens.py`), so `tlc predict` on the task's test
split reproduces the accuracy the run reports for that file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlc_export.serving.bundle import BUNDLE_FILES, Bundle, BundleError
from tlc_export.serving.predictor import Predictions, Predictor
from tlc_export.serving.tokens import ServingTokenizer, length_batches, pad_batch


def open_predictor(bundle_dir: str | Path, *, batch_size: int = 32, threads: int | None = None) -> Any:
    """The predictor of any bundle, by the family its tlc.json names: a `Predictor` (classification,
    `.predict(texts)`) or a `serving.translation.Translator` (translation, `.translate(texts)`)."""
    return family_of_bundle(bundle_dir).open_predictor(Path(bundle_dir), batch_size=batch_size, threads=threads)


def family_of_bundle(bundle_dir: str | Path) -> Any:
    """The task family (`tlc_export.tasks.TaskFamily`) that reads this bundle."""
    from tlc_export.serving.bundle import bundle_family
    from tlc_export.tasks import get_family

    name = bundle_family(bundle_dir)
    try:
        return get_family(name)
    except KeyError as e:
        raise BundleError(f"{Path(bundle_dir) / 'tlc.json'}: family {name!r} is not one this tlc knows ({e.args[0]}); "
                          "upgrade tlc or re-create the bundle") from e


__all__ = ["BUNDLE_FILES", "Bundle", "BundleError", "Predictions", "Predictor", "ServingTokenizer",
           "family_of_bundle", "length_batches", "open_predictor", "pad_batch"]
