"""The micro recipe and its local data (a corpus of short documents and a 500-row sentiment CSV),
shared by the end-to-end tests."""

from __future__ import annotations

import csv
import random
from pathlib import Path

POS = ["great", "wonderful", "moving", "brilliant", "funny", "charming"]
NEG = ["awful", "boring", "dull", "clumsy", "tedious", "bland"]
FILLER = ["the", "film", "story", "actors", "plot", "music", "was", "really", "quite", "and", "a", "its"]


def _write_data(root: Path) -> None:
    rng = random.Random(0)
    docs = root / "corpus"
    docs.mkdir()
    for i in range(40):
        paras = []
        for _ in range(6):
            words = [rng.choice(FILLER + POS + NEG) for _ in range(rng.randint(12, 30))]
            paras.append(" ".join(words).capitalize() + ".")
        (docs / f"doc{i:02d}.txt").write_text("\n\n".join(paras))
    with open(root / "task.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(500):
            label = i % 2
            cue = rng.choice(POS if label else NEG)
            words = [rng.choice(FILLER) for _ in range(rng.randint(4, 10))]
            words.insert(rng.randrange(len(words) + 1), cue)
            w.writerow([" ".join(words), "pos" if label else "neg"])


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
