"""Measure one model variant on several backends: latency, throughput, peak memory, accuracy."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime_bench.backends import get_backend
from runtime_bench.metrics import (
    DeviceMemory,
    PeakMemory,
    device_used_bytes,
    latency_stats,
    time_calls,
)

# Every result row has these keys (None where they do not apply), in this order.
FIELDS = (
    "variant", "model", "params", "sparsity", "bits", "format", "backend", "device", "dtype",
    "batch", "seq_len", "storage_bytes", "file_bytes", "packed_code_bytes", "nonzero_params", "nonzero_bits",
    "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_mean", "latency_ms_min",
    "latency_ms_max", "runs", "spread_flag", "throughput_seq_s", "peak_mem_bytes", "model_mem_bytes",
    "accuracy", "accuracy_split", "dev_accuracy", "test_accuracy", "accuracy_source",
    "threads", "load_s", "runtime_version", "status", "reason", "artifact",
)

# Token ids below this are specials (<s>, <pad>, </s>, <unk>, <mask> in our tokenizer): avoid them.
_FIRST_ORDINARY_ID = 5


@dataclass
class Variant:
    """One thing to measure: a compress artifact, HF folder, ONNX file or TensorRT engine."""

    variant: str
    source: str | Path | Any  # path, or an nn.Module for torch backends
    format: str = "torch"  # torch | onnx-* | tensorrt-*
    model: str | None = None
    params: int | None = None
    sparsity: float | None = None
    bits: int | None = None
    storage_bytes: int | None = None
    packed_code_bytes: int | None = None
    nonzero_params: int | None = None
    nonzero_bits: int | None = None
    file_bytes: int | None = None  # size on disk of an exported file
    vocab_size: int = 1000
    # split -> accuracy already measured upstream with the *same* computation (reused, not redone)
    known_accuracy: dict[str, float] = field(default_factory=dict)
    known_accuracy_source: str | None = None
    known_accuracy_backends: tuple[tuple[str, str, str], ...] = ()  # (backend, device, dtype) it applies to


@dataclass
class EvalSet:
    """A tokenized split, cut into batches sorted by length and padded to a multiple of 16 tokens.

    Sorting keeps padding (and time) small; the fixed batch size and the coarse length grid keep
    the number of distinct shapes small for torch.compile, CUDA graphs and TensorRT profiles.
    """

    split: str
    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (input_ids, attention_mask, labels)
    # False: score each batch as it is (a short last batch stays short). ONNX Runtime's dynamic INT8
    # picks one activation scale per batch, so rows added to a batch can change its other rows' logits.
    pad_last: bool = True

    @property
    def size(self) -> int:
        return int(sum(len(lab) for _, _, lab in self.batches))


def encode_split(
    tokenizer: Any,
    examples: Sequence[Any],
    split: str,
    max_length: int,
    batch_size: int = 32,
    pad_multiple: int = 16,
    pad_last: bool = True,
) -> EvalSet:
    """Tokenize `Example`s (text, label, text_pair) with an HF tokenizer into an EvalSet.

    `pad_multiple=1, pad_last=False` gives `tlc predict`'s batches (each padded to its longest row,
    the last one left short): what an ONNX Runtime accuracy must use to equal the served model's."""
    if not examples:
        return EvalSet(split, [], pad_last)
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples]
    enc = tokenizer(
        texts,
        pairs if any(p is not None for p in pairs) else None,
        truncation=True,
        max_length=max_length,
    )
    ids_list = enc["input_ids"]
    labels = np.asarray([int(e.label) for e in examples], dtype=np.int64)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 1
    order = np.argsort([len(x) for x in ids_list], kind="stable")
    batches = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        longest = max(len(ids_list[i]) for i in idx)
        width = min(max_length, -(-longest // pad_multiple) * pad_multiple)
        ids = np.full((len(idx), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for r, i in enumerate(idx):
            seq = ids_list[i][:width]
            ids[r, : len(seq)] = seq
            mask[r, : len(seq)] = 1
        batches.append((ids, mask, labels[idx]))
    return EvalSet(split, batches, pad_last)


def backend_accuracy(backend: Any, evalset: EvalSet, batch_size: int | None = None) -> float:
    """Fraction of examples whose argmax logit through `backend` equals the label."""
    correct = 0
    total = 0
    for ids, mask, labels in evalset.batches:
        n = len(labels)
        if batch_size and n < batch_size and evalset.pad_last:
            # Pad the last batch with copies of its first row so every call has the same batch size.
            reps = batch_size - n
            ids = np.concatenate([ids, np.repeat(ids[:1], reps, 0)])
            mask = np.concatenate([mask, np.repeat(mask[:1], reps, 0)])
        logits = backend.run(ids, mask)[:n]
        correct += int((logits.argmax(-1) == labels).sum())
        total += n
    if total == 0:
        raise ValueError(f"split `{evalset.split}` is empty")
    return correct / total


def random_inputs(batch: int, seq_len: int, vocab_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Timing inputs: random ordinary token ids with a full attention mask."""
    rng = np.random.default_rng(seed)
    lo = min(_FIRST_ORDINARY_ID, max(vocab_size - 1, 0))
    ids = rng.integers(lo, max(vocab_size, lo + 1), size=(batch, seq_len), dtype=np.int64)
    return ids, np.ones((batch, seq_len), dtype=np.int64)


def empty_row(v: Variant, backend: str, dtype: str, batch: int | None, seq_len: int | None, threads: int | None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(FIELDS)
    row.update(
        variant=v.variant, model=v.model, params=v.params, sparsity=v.sparsity, bits=v.bits,
        format=v.format, backend=backend, dtype=dtype, batch=batch, seq_len=seq_len,
        storage_bytes=v.storage_bytes, file_bytes=v.file_bytes, packed_code_bytes=v.packed_code_bytes,
        nonzero_params=v.nonzero_params, nonzero_bits=v.nonzero_bits, threads=threads,
        artifact=str(v.source) if isinstance(v.source, (str, Path)) else None,
    )
    return row


@dataclass
class BenchSettings:
    batches: Sequence[int] = (1, 32)
    seq_len: int = 128
    warmup: int = 3
    runs: int = 10
    threads: int | None = None
    device: str | None = None  # None = the backend's default (CUDA when present for torch)
    time_latency: bool = True
    eval_batch_size: int = 32
    seed: int = 0


def bench_variant(
    v: Variant,
    backends: Sequence[str],
    dtypes: Sequence[str],
    settings: BenchSettings,
    evalsets: Sequence[EvalSet] = (),
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Rows for every (backend, dtype, batch) of one variant.

    Accuracy is measured once per (backend, dtype) on each split in `evalsets` and copied into that
    pair's rows. A backend that cannot run here, or fails, gives rows with status
    `unavailable` / `failed` and the reason instead of raising.
    """
    rows: list[dict[str, Any]] = []
    batch_list: list[int | None] = list(settings.batches) if settings.time_latency else [None]
    for name in backends:
        for dtype in dtypes:
            rows.extend(_bench_one(v, name, dtype, batch_list, settings, evalsets, log))
    return rows


def _bench_one(
    v: Variant,
    name: str,
    dtype: str,
    batch_list: list[int | None],
    s: BenchSettings,
    evalsets: Sequence[EvalSet],
    log: Callable[[str], None] | None,
) -> list[dict[str, Any]]:
    backend = get_backend(name, device=s.device, threads=s.threads)
    rows = [empty_row(v, name, dtype, b, s.seq_len if b is not None else None, s.threads) for b in batch_list]

    def finish(status: str, reason: str | None = None) -> list[dict[str, Any]]:
        for r in rows:
            r["device"] = r["device"] or backend.device
            if r["status"] is None:
                r["status"], r["reason"] = status, reason
        return rows

    ok, why = backend.available(dtype)
    if not ok:
        return finish("unavailable", why)
    reusable = (name, backend.device, dtype) in v.known_accuracy_backends and all(
        es.split in v.known_accuracy for es in evalsets
    )
    if reusable and all(b is None for b in batch_list):
        # Nothing to time and every accuracy already measured by the same computation: don't load.
        acc = _accuracy(v, backend, name, dtype, evalsets, s.eval_batch_size)
        for r in rows:
            r.update(acc)
            r["reason"] = "accuracy only: latency is timed on dense variants (latency_variants: dense)"
        return finish("ok")
    try:
        used_before = device_used_bytes() if backend.cuda else None
        t0 = time.perf_counter()
        backend.load(v.source, dtype)
        load_s = time.perf_counter() - t0
        used_after = device_used_bytes() if backend.cuda else None
        extra = backend.describe()
        for r in rows:
            r["load_s"] = round(load_s, 3)
            r["device"] = extra.get("device", backend.device)
            # What the loaded model holds on the device, whichever allocator (torch, TensorRT, ORT) holds it.
            if used_before is not None and used_after is not None:
                r["model_mem_bytes"] = max(0, used_after - used_before)
            r["runtime_version"] = extra.get("runtime_version")
            r["runtime_reserved_bytes"] = backend.runtime_memory_bytes()  # part of model_mem_bytes
            r.update({k: val for k, val in extra.items() if k not in FIELDS})
        acc = _accuracy(v, backend, name, dtype, evalsets, s.eval_batch_size)
        for r in rows:
            r.update(acc)
        for r in rows:
            if r["batch"] is None:
                r["reason"] = "accuracy only: latency is timed on dense variants (latency_variants: dense)"
                continue
            if log:
                log(f"{v.variant} {name} {dtype} batch {r['batch']}")
            ids, mask = random_inputs(r["batch"], s.seq_len, v.vocab_size, s.seed)
            prepared = backend.prepare(ids, mask)
            # Peak = what the warm-up and timed calls add on top of the loaded backend: torch's allocator peak
            # for torch backends; for ONNX Runtime and TensorRT on CUDA, the driver's used-memory delta (their
            # allocators are not torch's; what a TensorRT context reserved at load is in model_mem_bytes).
            own = backend.cuda and backend.memory_from_device
            with (DeviceMemory() if own else PeakMemory(cuda=backend.cuda)) as mem:
                samples = time_calls(lambda p=prepared: backend.forward(p), backend.sync, s.warmup, s.runs, cuda=backend.cuda)
            st = latency_stats(samples)
            r.update(st.as_row())
            r.update(runs=st.runs, spread_flag=st.spread_flag, throughput_seq_s=st.throughput(r["batch"]), peak_mem_bytes=mem.bytes)
        return finish("ok")
    except Exception as exc:  # one broken (variant, backend) must not stop the rest of the bench
        return finish("failed", f"{type(exc).__name__}: {exc}")
    finally:
        backend.close()


def _accuracy(
    v: Variant, backend: Any, name: str, dtype: str, evalsets: Sequence[EvalSet], eval_batch: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"dev_accuracy": None, "test_accuracy": None}
    sources = []
    reuse = (name, backend.device, dtype) in v.known_accuracy_backends
    for es in evalsets:
        key = f"{es.split}_accuracy"
        if reuse and es.split in v.known_accuracy:
            out[key] = v.known_accuracy[es.split]
            sources.append(f"{es.split}: reused from {v.known_accuracy_source}")
        else:
            out[key] = backend_accuracy(backend, es, eval_batch)
            sources.append(f"{es.split}: measured ({es.size} examples)")
    if out["dev_accuracy"] is not None:
        out["accuracy"], out["accuracy_split"] = out["dev_accuracy"], "dev"
    elif out["test_accuracy"] is not None:
        out["accuracy"], out["accuracy_split"] = out["test_accuracy"], "test"
    out["accuracy_source"] = "; ".join(sources) if sources else "not measured"
    return out
