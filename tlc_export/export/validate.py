"""Check every exported file: ONNX checker, a plain ONNX Runtime CPU session, logits vs PyTorch.

Tolerances (max |logit difference|, scaled by max(1, max |reference logit|)):
- same function in fp32 (fp32, own INT8/INT4 codes, re-zeroing masks): 1e-3 — only the
  summation order of MatMul differs between PyTorch and ORT;
- fp16 graph: 5e-2 — fp16 rounding of weights (~1e-3 relative) accumulated over layers;
- own codes on integer kernels with dynamically quantized activations (onnx-int8, and onnx-int4 when
  its codes run on DynamicQuantizeMatMul): 5e-2 — the weights are the variant's codes exactly, each
  GEMM input is rounded to a per-tensor uint8 grid (≤ 1/510 of its range), a relative error of a few
  1e-3 per layer. *Relative*: 5e-2 × max |reference logit| (`RELATIVE`), since that error scales with
  the logits, also below 1; the tests' models show 0.7–1.5 %, a corrupted scale or LayerNorm 25–35 %;
- formats that re-quantize activations (int8-dynamic/-static) or weights on their own grid
  (int4-matmulnbits): not a logit check but the dev-accuracy difference, reported, not raised —
  they are different functions by design.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from tlc_export.errors import ExportMismatchError, OutputMismatch, StageError
from tlc_export.export.session import session  # noqa: F401 - re-exported: callers import it from here

TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2, "int8-act": 5e-2}
RELATIVE = {"int8-act"}  # tolerance × max |reference| (the others: × max(1, max |reference|))


@dataclass
class Batch:
    """Padded int64 model inputs (numpy) plus labels, for ORT and PyTorch alike."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray | None = None
    index: np.ndarray | None = None  # positions of the rows in the example list (length-sorted batches)

    def feeds(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def encode(tokenizer, examples: Sequence, max_length: int, batch_size: int) -> list[Batch]:
    """Tokenize `Example`s (text, label, text_pair) into padded batches (padding to the longest)."""
    out = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        pairs = [e.text_pair for e in chunk]
        enc = tokenizer(
            [e.text for e in chunk],
            pairs if any(p is not None for p in pairs) else None,
            truncation=True, max_length=max_length, padding=True, return_tensors="np",
        )
        out.append(Batch(enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64),
                         np.array([e.label for e in chunk], dtype=np.int64)))
    return out


def encode_by_length(tokenizer_dir: str | os.PathLike[str], examples: Sequence, max_length: int,
                     batch_size: int) -> list[Batch]:
    """`Example`s as `tlc predict` batches them (`tlc_export.tokens`): the bundle's tokenizer,
    sorted by length, `batch_size` per batch, each padded to its longest row; `Batch.index` maps rows back
    to `examples`. Scoring files with these batches makes `tlc predict` reproduce their accuracy exactly,
    also for dynamic INT8, whose activation scales depend on the batch."""
    from tlc_export.tokens import ServingTokenizer, length_batches, pad_batch

    tok = ServingTokenizer.from_dir(tokenizer_dir, max_length)
    pairs = [e.text_pair for e in examples]
    ids = tok.encode([e.text for e in examples], pairs if any(p is not None for p in pairs) else None)
    labels = np.array([e.label for e in examples], dtype=np.int64)
    out = []
    for idx in length_batches([len(x) for x in ids], batch_size):
        x, m = pad_batch(ids, idx, tok.pad_id)
        out.append(Batch(x, m, labels[idx], index=idx))
    return out


def in_example_order(values: Sequence[np.ndarray], batches: Sequence[Batch]) -> np.ndarray:
    """Per-row values of `batches` (e.g. argmax labels) put back in example order."""
    n = sum(len(b.input_ids) for b in batches)
    first = np.asarray(values[0]) if values else np.zeros(0)
    out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
    pos = 0
    for v, b in zip(values, batches, strict=True):
        idx = b.index if b.index is not None else np.arange(pos, pos + len(v))
        out[idx] = v
        pos += len(v)
    return out


def check(path: str | os.PathLike[str]) -> None:
    """onnx.checker with full shape inference; raises StageError naming the file."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # onnx raises ValidationError / InferenceError
        raise StageError(f"{path}: fails onnx.checker ({e}); the export produced an invalid graph") from e


def onnx_logits(sess, batches: Sequence[Batch]) -> list[np.ndarray]:
    return [np.asarray(sess.run(None, b.feeds())[0], dtype=np.float32) for b in batches]


@torch.no_grad()
def torch_logits(model: nn.Module, batches: Sequence[Batch]) -> list[np.ndarray]:
    model.eval()
    out = []
    for b in batches:
        r = model(input_ids=torch.from_numpy(b.input_ids), attention_mask=torch.from_numpy(b.attention_mask))
        out.append(r.logits.float().numpy())
    return out


def accuracy(logits: Sequence[np.ndarray], batches: Sequence[Batch]) -> float:
    hits = sum(int((lg.argmax(-1) == b.labels).sum()) for lg, b in zip(logits, batches, strict=True))
    n = sum(len(b.labels) for b in batches)
    return hits / max(1, n)


def max_abs_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> tuple[float, float]:
    """(max |a-b|, max |b|) over all batches."""
    d = max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
    scale = max(float(np.abs(y).max()) for y in b)
    return d, scale


def compare(
    path: str | bytes | os.PathLike[str],
    reference: Sequence[np.ndarray],
    batches: Sequence[Batch],
    tolerance: float | None,
    sess=None,
    relative: bool = False,
) -> tuple[float, float, list[np.ndarray]]:
    """Run `path` on `batches`; raise ExportMismatchError when max |diff| exceeds
    tolerance × max(1, max |reference|) (`relative`: tolerance × max |reference|). Returns
    (max_abs_diff, effective tolerance, ORT logits). `tolerance=None` only measures."""
    sess = sess or session(path, exact=True)
    got = onnx_logits(sess, batches)
    d, scale = max_abs_diff(got, reference)
    if tolerance is None:
        return d, float("nan"), got
    tol = tolerance * (max(scale, 1e-6) if relative else max(1.0, scale))
    if not np.isfinite(d) or d > tol:
        raise ExportMismatchError("<in-memory model>" if isinstance(path, bytes) else str(Path(path)), [OutputMismatch("logits", d, tol)])
    return d, tol, got
