"""`bench` stage: every compress variant through the torch backends, every exported file through
ONNX Runtime / TensorRT; latency, throughput, memory and accuracy rows."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from runtime_bench.artifacts import artifact_kind, vocab_size_of
from runtime_bench.backends import TORCH_BACKENDS
from runtime_bench.harness import (
    FIELDS,
    BenchSettings,
    EvalSet,
    Variant,
    bench_variant,
    empty_row,
    encode_split,
)
from runtime_bench.metrics import environment
from tlc_export import atomic
from tlc_export.config.bench import BenchConfig
from tlc_export.errors import StageError
from tlc_export.stages.base import Stage, StageContext

TORCH_REUSE_NOTE = "compress/results.json (same torch fp32 model)"
ORT_REUSE_NOTE = "export/results.json (same ONNX Runtime CPU session)"
# These backends re-quantize the variant's weights when they load it (W8A8 per channel, tinygemm
# INT4 group 128): what they time and score is a model of their own, which no file stores.
REQUANTIZING_BACKENDS = {"torch-int8", "torch-int4"}
REQUANTIZED_NOTE = ("the backend re-quantizes the variant's weights at load time: no stored artifact is this model, "
                    "so the row has no storage_bytes")


def read_rows(path: Path, key: str) -> list[dict[str, Any]]:
    """A stage's result rows: a JSON list, or a dict holding the list under `key`."""
    if not path.is_file():
        raise StageError(f"{path}: missing; run the stage that writes it first (tlc run)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StageError(f"{path}: not valid JSON ({exc}); rerun the stage that writes it") from None
    rows = data.get(key) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise StageError(f"{path}: expected a list of rows (or {{'{key}': [...]}}); rerun the stage that writes it")
    return rows


def write_tables(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """results.jsonl and results.csv, both rewritten atomically from the full row list."""
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]  # drop resume bookkeeping
    atomic.write_text(out_dir / "results.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in rows))
    buf = io.StringIO()
    extra = sorted({k for r in rows for k in r} - set(FIELDS))
    w = csv.DictWriter(buf, fieldnames=[*FIELDS, *extra], extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    atomic.write_text(out_dir / "results.csv", buf.getvalue())


def _group(r: dict[str, Any]) -> tuple[Any, ...]:
    # A row of an older partial file has no `_device`: its group is the CPU/default one.
    return (r["variant"], r["format"], r["backend"], r["dtype"], r.get("_device"))


def ort_gpu_providers(cfg: BenchConfig) -> list[str]:
    """The GPU providers of `bench.onnxruntime_providers` this ONNX Runtime has."""
    try:
        import onnxruntime as ort

        have = set(ort.get_available_providers())
    except ImportError:
        return []
    names = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
    return [p for p in cfg.onnxruntime_providers if p in names and names[p] in have]


def accuracy_from_eager(v: Variant, eager: list[dict[str, Any]], dtype: str, threads: int | None) -> dict[str, Any]:
    """An untimed torch-compile row: the accuracy of torch-eager at the same dtype (the same function; compiling
    only to score it would cost a compile of 30-60 s per variant and dtype on a GPU)."""
    row = empty_row(v, "torch-compile", dtype, None, None, threads)
    src = eager[0]
    for k in ("accuracy", "accuracy_split", "dev_accuracy", "test_accuracy", "device", "runtime_version"):
        row[k] = src.get(k)
    row["accuracy_source"] = f"torch-eager {dtype} on {src.get('device')} (same function, not compiled): " + str(
        src.get("accuracy_source"))
    row.update(status=src.get("status"), reason="accuracy only: latency is timed on dense variants "
               "(latency_variants: dense); accuracy taken from torch-eager at the same dtype")
    if src.get("predictions"):
        row["predictions"] = src["predictions"]
    return row


def _timed(cfg: BenchConfig, sparsity: float, bits: int | None, torch_backend: bool) -> bool:
    if cfg.latency_variants == "all":
        return True
    if torch_backend:
        # Fake-quant weights and unstructured zeros run the same dense fp32 kernels as the dense model.
        return sparsity == 0 and (bits is None or bits >= 32)
    return sparsity == 0


def stamp_identity(row: dict[str, Any], v: Variant, predictions: str | None) -> None:
    """Keep a row about one model: a backend that re-quantizes at load time gets no storage_bytes;
    a row whose every accuracy was reused from an upstream measurement of the same computation
    points at that model's per-example predictions (for paired tests in the report)."""
    if row.get("backend") in REQUANTIZING_BACKENDS:
        row["storage_bytes"] = None
        row["packed_code_bytes"] = None
        row["storage_note"] = REQUANTIZED_NOTE
    source = row.get("accuracy_source") or ""
    reused = source and "measured" not in source and "not measured" not in source
    key = (row.get("backend"), row.get("device"), row.get("dtype"))
    if reused and key in v.known_accuracy_backends and predictions:
        row["predictions"] = predictions


class BenchStage(Stage):
    name = "bench"
    sections = ("bench",)
    inputs = ("export",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        cfg: BenchConfig = ctx.recipe.bench
        root = ctx.run_dir.root
        comp_rows = read_rows(root / "compress" / "results.json", "variants")
        exp_rows = read_rows(root / "export" / "results.json", "artifacts")
        by_variant = {r["variant"]: r for r in comp_rows}
        settings = BenchSettings(
            batches=cfg.batch_sizes, seq_len=cfg.seq_len, warmup=cfg.warmup, runs=cfg.runs,
            threads=cfg.threads, eval_batch_size=cfg.eval_batch_size,
        )
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)

        # Resume: keep complete groups from an interrupted run with the same cache key.
        partial = ctx.out_dir / "rows.partial.jsonl"
        old = atomic.read_jsonl(partial)
        expected = {True: len(cfg.batch_sizes), False: 1}
        gpu_ort = ort_gpu_providers(cfg) if "onnxruntime" in cfg.backends else []
        counts = Counter(_group(r) for r in old)
        done_rows = [r for r in old if counts[_group(r)] == r.get("_group_rows")]
        done = {_group(r) for r in done_rows}

        jobs = self._jobs(ctx, cfg, comp_rows, exp_rows, by_variant, gpu_ort)
        env = environment(cfg.threads)
        atomic.write_json(ctx.out_dir / "environment.json", env)
        rows = list(done_rows)
        evalsets: dict[str, list[EvalSet]] = {}
        progress = Progress(
            TextColumn("[bold]bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"), console=ctx.console, transient=True,
        )
        with progress:
            task_id = progress.add_task("", total=len(jobs))
            for v, backend, dtype, timed, pre, preds, device in jobs:
                key = (v.variant, v.format, backend, dtype, device)
                progress.update(task_id, description=f"{v.variant} {v.format} {backend} {dtype} {device or ''}")
                if key in done:
                    progress.advance(task_id)
                    continue
                eager = [r for r in rows if (r["variant"], r["format"], r["backend"], r["dtype"]) ==
                         (v.variant, v.format, "torch-eager", dtype) and r.get("status") == "ok"]
                if pre is not None:
                    new = [pre]
                elif backend == "torch-compile" and not timed and eager:
                    new = [accuracy_from_eager(v, eager, dtype, cfg.threads)]
                else:
                    sets = self._evalsets(ctx, cfg, v.model, evalsets, serving=backend == "onnxruntime") \
                        if cfg.accuracy else []
                    settings.time_latency = timed
                    settings.device = device
                    new = bench_variant(v, [backend], [dtype], settings, sets)
                    for r in new:
                        stamp_identity(r, v, preds)
                n = expected[timed] if pre is None else 1
                for r in new:
                    r["_group_rows"] = n
                    r["_device"] = device
                    atomic.append_jsonl(partial, r)
                rows.extend(new)
                progress.advance(task_id)
        write_tables(ctx.out_dir, rows)
        status = Counter(r["status"] for r in rows)
        ctx.console.print(
            f"bench: {len(rows)} rows — " + ", ".join(f"{k} {n}" for k, n in sorted(status.items()))
        )
        return {
            "results": "bench/results.jsonl",
            "csv": "bench/results.csv",
            "environment": "bench/environment.json",
            "rows": len(rows),
            **{f"rows_{k}": n for k, n in status.items()},
        }

    def _jobs(
        self,
        ctx: StageContext,
        cfg: BenchConfig,
        comp_rows: list[dict[str, Any]],
        exp_rows: list[dict[str, Any]],
        by_variant: dict[str, dict[str, Any]],
        gpu_ort: list[str] = (),  # type: ignore[assignment]
    ) -> list[tuple[Variant, str, str, bool, dict[str, Any] | None, str | None, str | None]]:
        """(variant, backend, dtype, timed, pre-made row or None, predictions of the reused accuracy, device
        (None: the backend's default)) for everything to measure. Torch backends are ordered eager first,
        so an untimed torch-compile row can take eager's accuracy at its dtype."""
        root = ctx.run_dir.root
        export_split = ctx.recipe.export.accuracy_split if ctx.recipe.export else "dev"
        jobs: list[tuple[Variant, str, str, bool, dict[str, Any] | None, str | None, str | None]] = []
        torch_names = sorted((b for b in cfg.backends if b in TORCH_BACKENDS), key=lambda b: b != "torch-eager")
        import torch

        torch_device = "cuda" if torch.cuda.is_available() else "cpu"
        for r in comp_rows:
            v = self._variant(r, root / r["artifact"], "torch")
            known = {"dev": r.get("dev_accuracy"), "test": r.get("test_accuracy")}
            v.known_accuracy = {k: x for k, x in known.items() if x is not None}
            v.known_accuracy_source = TORCH_REUSE_NOTE
            # torch.compile fuses kernels but computes the same fp32 function: reusing its accuracy saves
            # a compile per variant and shape, which on CPU would dominate the bench's time budget.
            v.known_accuracy_backends = (("torch-eager", torch_device, "fp32"), ("torch-compile", torch_device, "fp32"))
            timed = _timed(cfg, v.sparsity or 0.0, v.bits, torch_backend=True)
            jobs.extend((v, b, d, timed, None, r.get("predictions"), None) for d in cfg.dtypes for b in torch_names)
        for e in exp_rows:
            base = by_variant.get(e["variant"], {})
            backend = "tensorrt" if str(e["format"]).startswith("tensorrt") else "onnxruntime"
            if backend not in cfg.backends:
                continue
            path = root / e["path"] if e.get("path") else None
            # An export row's own fields win: ORT-quantized files have no storage_bytes (they are models of
            # their own, not the variant's artifact), code-carrying files the artifact's packed storage.
            v = self._variant({**base, **{k: e[k] for k in ("variant", "model", "bits") if e.get(k) is not None}}, path, e["format"])
            v.storage_bytes = e.get("storage_bytes", v.storage_bytes)
            v.file_bytes = e.get("file_bytes")
            if e.get("status") != "ok" or path is None:
                row = empty_row(v, backend, "fp32", None, None, cfg.threads)
                row.update(status=e.get("status") if e.get("status") in ("unavailable", "failed") else "unavailable",
                           reason=f"export: {e.get('reason') or 'no file written'}")
                jobs.append((v, backend, "fp32", False, row, None, None))
                continue
            # The bench runs a plain ONNX Runtime session: reuse the accuracies export measured with one
            # (every split, with per-example predictions, in current runs; one split in older ones).
            known = {s: e[f"{s}_accuracy"] for s in ("dev", "test") if e.get(f"{s}_accuracy") is not None}
            if not known:
                plain_acc = e.get("dev_accuracy_onnx_ort_default", e.get("dev_accuracy_onnx"))
                known = {} if plain_acc is None else {export_split: plain_acc}
            if known and backend == "onnxruntime":
                v.known_accuracy = known
                v.known_accuracy_source = ORT_REUSE_NOTE
                v.known_accuracy_backends = (("onnxruntime", "cpu", "fp32"),)
            try:
                v.vocab_size = vocab_size_of(path) if artifact_kind(path) == "onnx" else v.vocab_size
            except (ValueError, OSError):
                pass  # unreadable file: the backend's load reports it in the row
            timed = _timed(cfg, v.sparsity or 0.0, v.bits, torch_backend=False)
            if backend == "tensorrt" or "cpu" in cfg.onnxruntime_providers:
                jobs.append((v, backend, "fp32", timed, None, e.get("predictions"), None))
            if backend == "onnxruntime" and timed:
                # The same file on ONNX Runtime's GPU providers, beside the GPU torch and TensorRT rows.
                jobs.extend((v, backend, "fp32", True, None, None, p) for p in gpu_ort)
        return jobs

    @staticmethod
    def _variant(r: dict[str, Any], source: Path | None, fmt: str) -> Variant:
        v = Variant(
            variant=r["variant"], source=source, format=fmt, model=r.get("model"), params=r.get("params"),
            sparsity=r.get("sparsity"), bits=r.get("bits"), storage_bytes=r.get("storage_bytes"),
            packed_code_bytes=r.get("packed_code_bytes"), nonzero_params=r.get("nonzero_params"),
            nonzero_bits=r.get("nonzero_bits"),
        )
        if source is not None and fmt == "torch" and source.exists():
            v.vocab_size = vocab_size_of(source)
        return v

    def _evalsets(self, ctx: StageContext, cfg: BenchConfig, size: str | None, cache: dict[str, list[EvalSet]],
                  serving: bool = False) -> list[EvalSet]:
        """Tokenized accuracy splits for one model size (its finetune folder holds the tokenizer).

        `serving`: `tlc predict`'s batches (length-sorted, 32 a batch, each padded to its longest row),
        which the export stage also scores with, so an ONNX Runtime row's accuracy on either split is
        what `tlc predict` gets for that file (dynamic INT8's per-batch scale makes batching matter)."""
        size = size or ""
        key = f"{size}|serving" if serving else size
        if key in cache:
            return cache[key]
        from tlc_export.data import load_tokenizer
        if not hasattr(self, "_task"):
            self._task = ctx.family.read(ctx.recipe)
        tok_dir = ctx.input_dir("finetune") / size / "model"
        tok = load_tokenizer(tok_dir)
        max_len = ctx.recipe.finetune.max_length
        splits = {"dev": self._task.dev, "test": self._task.test}
        if serving:
            from tlc_export.tokens import DEFAULT_BATCH_SIZE

            cache[key] = [encode_split(tok, splits[s], s, max_len, DEFAULT_BATCH_SIZE, pad_multiple=1, pad_last=False)
                          for s in cfg.accuracy_splits]
        else:
            cache[key] = [encode_split(tok, splits[s], s, max_len, cfg.eval_batch_size) for s in cfg.accuracy_splits]
        return cache[key]
