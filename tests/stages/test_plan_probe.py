"""What `tlc plan` measures on a pilot checkpoint: storage equals the artifact's bytes on disk (and an independent
count of the format's bytes), compression penalties, latency rows."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from test_pretrain_loop import SIZE, make_data

from tlc_export.compress.packing import packed_nbytes
from tlc_export.config.compress import CompressConfig
from tlc_export.config.pretrain import PretrainConfig
from tlc_export.models import build_mlm
from tlc_export.plan.probe import (
    artifact_storage,
    classifier_from_mlm,
    compression_penalties,
    latency,
)
from tlc_export.pretrain.evaluate import fixed_val_batches


def _mlm(vocab: int = 300) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_mlm(SIZE, vocab_size=vocab, max_seq_len=32, dropout=0.0).eval()


def _data_section(path: Path) -> tuple[int, dict]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    return len(raw) - 8 - n, header


def test_storage_is_the_artifact_bytes_and_the_format_arithmetic(tmp_path: Path) -> None:
    clf = classifier_from_mlm(_mlm(), num_labels=2)
    cfg = CompressConfig.model_validate({"quantize": {"bits": [8, 4]}, "prune": {"sparsity": [0.5], "step": 0.5}})
    rows = artifact_storage(clf, cfg, SIZE.name, tmp_path / "artifacts")
    assert set(rows) == {"s00.b32", "s00.b8", "s00.b4", "s50.b32", "s50.b8", "s50.b4"}
    for r in rows.values():
        assert r["storage_bytes"] == Path(r["artifact"]).stat().st_size
    params = {n: p for n, p in clf.named_parameters()}  # remove_duplicate: the tied weight once
    buffers = sum(b.numel() * b.element_size() for n, b in clf.state_dict().items() if n not in params and
                  n not in dict(clf.named_parameters(remove_duplicate=False)))
    # Independent count of the data bytes: fp32 = 4 bytes a value; per-tensor b-bit = packed codes + scale + offset.
    data32, _ = _data_section(Path(rows["s00.b32"]["artifact"]))
    assert data32 == 4 * sum(p.numel() for p in params.values()) + buffers
    for bits in (8, 4):
        data, _ = _data_section(Path(rows[f"s00.b{bits}"]["artifact"]))
        assert data == sum(packed_nbytes(p.numel(), bits) + 8 for p in params.values()) + buffers
    assert rows["s50.b4"]["storage_bytes"] < rows["s00.b4"]["storage_bytes"] < rows["s00.b8"]["storage_bytes"]


def test_penalties_and_latency(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    pc = PretrainConfig(time_budget_s=1.0, eval_batches=2, batch_size=16)
    sample = data.validation_sample(pc)
    val = fixed_val_batches(data.val_rows, sample.indices, sample.batch_size, data.mask_spec(), 0)
    cfg = CompressConfig.model_validate({"quantize": {"bits": [8, 2]}, "prune": {"sparsity": [0.9], "step": 0.9}})
    pen = compression_penalties(_mlm(), cfg, val)
    assert pen["s00.b32"]["penalty"] == 0.0
    assert abs(pen["s00.b8"]["penalty"]) < 0.05  # 8-bit barely moves a model
    assert pen["s90.b2"]["penalty"] > pen["s00.b8"]["penalty"]
    lat = latency(classifier_from_mlm(_mlm(), 2), [1, 4], 16, tmp_path / "onnx", runs=2, warmup=1, threads=1)
    assert set(lat) == {"1", "4"} and all(v["p50_ms"] > 0 for v in lat.values())
    assert (tmp_path / "onnx" / "model.onnx").exists()
