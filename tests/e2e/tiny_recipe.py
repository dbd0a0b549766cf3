"""The micro recipe and its local data (a corpus of short documents and a 500-row sentiment CSV),
shared by the end-to-end tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# The data writer is the one `scripts/tiny_data.py` gives users (recipes/tiny/); loaded from its file
# because scripts/ is not a package.
_spec = importlib.util.spec_from_file_location("tiny_data", Path(__file__).resolve().parents[2] / "scripts" / "tiny_data.py")
assert _spec is not None and _spec.loader is not None
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)
POS, NEG, FILLER = _tiny.POS, _tiny.NEG, _tiny.FILLER


def _write_data(root: Path) -> None:
    _tiny.write_tiny_data(root)


RECIPE = """\
name: tiny
data:
  sources: [{kind: text, path: "corpus/*.txt"}]
  max_seq_len: 32
  val_fraction: 0.1
  min_val_documents: 4
tokenizer: {vocab_size: 400}
models:
  sizes:
    - {layers: 1, hidden: 64, heads: 2}
    - {layers: 2, hidden: 64, heads: 2}
pretrain:
  time_budget_s: 2
  batch_size: 8
  micro_batch_size: 4
  lr: 2.0e-3
  eval_every_s: 1
  eval_batches: 2
  checkpoint_every_s: 1
finetune:
  task: {kind: csv, path: task.csv}
  lr: 2.0e-3
  batch_size: 16
  epochs: 2
  max_length: 24
compress:
  quantize: {bits: [8, 4]}
  prune: {sparsity: [0.5], step: 0.5, recovery_max_steps: 4, recovery_eval_every_steps: 2}
  analysis: {bits: 4, sparsity: 0.5}
export:
  formats: [onnx-fp32, onnx-int8, onnx-int8-dynamic, onnx-int4, tensorrt-int8]
  sparsity: []
  calibration_samples: 8
  validation_samples: 8
  trt_max_seq_len: 32
bench:
  backends: [torch-eager, onnxruntime, tensorrt]
  batch_sizes: [2]
  seq_len: 16
  warmup: 1
  runs: 2
report: {}
"""
