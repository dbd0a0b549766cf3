"""What a pilot checkpoint tells about the deployed model, measured rather than predicted.

- `compression_penalties` (`compress.mlm_penalty`, below the families: the run's report measures the same on
  the final checkpoint): masked-LM validation loss of the pilot under each of the recipe's (sparsity, bits),
  minus the dense fp32 loss. Carrying that increase over to the final model is the paper's Figure 8 finding
  (compressibility barely depends on how far pretraining went): an assumption the backtest (`tlc plan --check`,
  and the report of a run made from a plan) measures.
- `artifact_storage`: the bytes of the compress stage's artifact (`compress.artifact.save_artifact`)
  for the size's classifier under each (sparsity, bits), written to disk and measured: the format's
  own arithmetic (packed codes, scales, bitmask or CSR positions, header) with nothing modelled.
- `latency`: the size's fp32 classifier exported to ONNX and timed in onnxruntime (or torch eager) at
  the recipe's bench batch sizes and sequence length. Latency depends on shapes, not weight values.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlc_export.compress.artifact import save_artifact
from tlc_export.compress.mlm_penalty import compress_, compression_penalties, compressions
from tlc_export.compress.variants import variant_name
from tlc_export.config.compress import CompressConfig

__all__ = ["artifact_storage", "classifier_from_mlm", "compress_", "compression_penalties", "compressions", "latency",
           "variant_name"]


def classifier_from_mlm(mlm: nn.Module, num_labels: int, seed: int = 0) -> nn.Module:
    """The deployed model's shape: the pilot's encoder under a freshly initialised classification head."""
    from transformers import RobertaPreLayerNormForSequenceClassification

    config = copy.deepcopy(mlm.config)
    config.num_labels = num_labels
    torch.manual_seed(seed)
    clf = RobertaPreLayerNormForSequenceClassification(config)
    clf.roberta_prelayernorm.load_state_dict(mlm.roberta_prelayernorm.state_dict())
    return clf.eval()


def artifact_storage(classifier: nn.Module, cfg: CompressConfig, size: str, folder: Path) -> dict[str, dict[str, Any]]:
    """{"s30.b4": {sparsity, bits, storage_bytes, artifact}}: each variant's artifact written and its bytes read."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Any]] = {}
    for sparsity, bits in compressions(cfg):
        m = copy.deepcopy(classifier)
        masks, quantized = compress_(m, cfg, sparsity, bits)
        name = variant_name(size, sparsity, bits)
        path = folder / f"{name}.safetensors"
        report = save_artifact(path, m, quantized, masks, {"variant": name, "source": "tlc plan pilot"})
        out[f"s{round(100 * sparsity):02d}.b{bits}"] = {
            "sparsity": sparsity, "bits": bits, "storage_bytes": int(path.stat().st_size),
            "nonzero_bits": report.nonzero_bits, "artifact": str(path)}
    return out


def latency(classifier: nn.Module, batch_sizes: list[int], seq_len: int, folder: Path, *, backend: str = "onnxruntime",
            warmup: int = 2, runs: int = 5, threads: int | None = None) -> dict[str, dict[str, float]]:
    """{batch: {p50_ms, per_sequence_ms}} of one forward pass at [batch, seq_len] on `backend`."""
    vocab = int(classifier.config.vocab_size)
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, float]] = {}
    if backend == "onnxruntime":
        import onnxruntime as ort

        from tlc_export.export.onnx_export import export_onnx
        from tlc_export.export.session import cpu_session

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.onnx"
        export_onnx(classifier, path, max_seq_len=seq_len)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        sess = cpu_session(path, opts)

        def run(ids: np.ndarray) -> None:
            sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    elif backend == "torch-eager":
        if threads:
            torch.set_num_threads(threads)

        def run(ids: np.ndarray) -> None:
            t = torch.from_numpy(ids)
            with torch.inference_mode():
                classifier(input_ids=t, attention_mask=torch.ones_like(t))
    else:
        raise ValueError(f"--backend {backend!r}: tlc plan measures onnxruntime or torch-eager")
    for b in batch_sizes:
        ids = rng.integers(5, vocab, size=(b, seq_len), dtype=np.int64)
        for _ in range(warmup):
            run(ids)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            run(ids)
            times.append((time.perf_counter() - t0) * 1000)
        p50 = statistics.median(times)
        out[str(b)] = {"p50_ms": p50, "per_sequence_ms": p50 / b}
    return out
