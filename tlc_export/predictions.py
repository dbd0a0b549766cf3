"""Per-example predictions: what paired tests and intervals are computed from.

An accuracy alone cannot say whether two models differ beyond noise; their predictions on the
same examples can. Every stage that scores a classifier stores, beside the model or artifact it
scored, one `.predictions.npz` holding for each split the predicted labels and the gold labels
(in the task's fixed split order), so the report and the claims card can pair any two variants.

Layout (run-directory relative; the path is also recorded in the stage's result row under
`predictions`):
- finetune: `finetune/<size>/predictions.npz`
- compress: `compress/<size>/variants/<variant>.predictions.npz`, beside `<variant>.safetensors`
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlc_export import atomic
from tlc_export.errors import StageError

SUFFIX = ".predictions.npz"


@dataclass(frozen=True)
class SplitPredictions:
    """Predicted and gold labels of one split, aligned example by example."""

    predicted: np.ndarray  # int64 [n]
    labels: np.ndarray  # int64 [n]

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def predictions_path_for(artifact: Path) -> Path:
    """`…/<variant>.safetensors` → `…/<variant>.predictions.npz`."""
    return artifact.with_name(artifact.name.split(".safetensors")[0] + SUFFIX)


def save_predictions(path: Path, splits: dict[str, SplitPredictions]) -> None:
    """Write every split's predictions and labels into one .npz, atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name, sp in splits.items():
        pred = np.asarray(sp.predicted, dtype=np.int64).reshape(-1)
        lab = np.asarray(sp.labels, dtype=np.int64).reshape(-1)
        if pred.shape != lab.shape:
            raise ValueError(f"{path}: split {name!r} has {pred.size} predictions for {lab.size} labels")
        arrays[f"{name}.predicted"] = pred
        arrays[f"{name}.labels"] = lab
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic.write_bytes(Path(path), buf.getvalue())


def load_predictions(path: Path) -> dict[str, SplitPredictions]:
    """Every split stored in a `.predictions.npz`."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: predictions missing; rerun the stage that scored this model")
    try:
        with np.load(path) as z:
            names = sorted({k.rsplit(".", 1)[0] for k in z.files})
            return {n: SplitPredictions(z[f"{n}.predicted"], z[f"{n}.labels"]) for n in names}
    except (OSError, ValueError, KeyError) as exc:
        raise StageError(f"{path}: unreadable predictions file ({exc}); rerun the stage that wrote it") from exc
