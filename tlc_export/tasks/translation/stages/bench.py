"""`bench` stage of the translation family: sentences/s and per-sentence latency of greedy translation
through every exported file (ONNX Runtime, our greedy loop) and PyTorch eager (`generate`, KV cache),
with the BLEU of that same model through that runtime and its storage.

Timed: a fixed set of dev sources (the first max(`bench.batch_sizes`) of dev, in order), translated at
each batch size (`tlc_export.tasks.translation.timing`), `bench.warmup` untimed and `bench.runs` timed passes,
`bench.threads` threads. PyTorch eager times the dense b32 model only: fake-quant weights and
unstructured zeros run the same dense kernels. Files of pruned variants are timed only with
`bench.latency_variants: all`; untimed rows still carry BLEU and storage.
BLEU: an ONNX Runtime row reuses its export row's (the same files, the same plain session and greedy
loop); a PyTorch row reuses the compress row's when it was decoded greedily, else decodes dev and test
greedily with `generate` (predictions beside the rows).

```
bench/results.jsonl, bench/results.json   one row per (variant, backend, format, batch_size)
bench/rows.partial.jsonl                  rows of finished (variant, backend, format) groups (resume)
bench/<variant>/torch-eager/predictions.json
```
"""

from __future__ import annotations

import json
import math
import platform
from collections import Counter
from typing import Any

from rich.table import Table

from tlc_export import atomic
from tlc_export.errors import StageError, TlcError
from tlc_export.stages.base import Stage, StageContext

BLEU_FIELDS = ("dev_bleu", "dev_bleu_ci", "test_bleu", "test_bleu_ci", "dev_chrf", "dev_chrf_ci", "test_chrf",
               "test_chrf_ci", "dev_n", "test_n", "bleu_signature", "chrf_signature", "interval_method")


def _runtime_version(backend: str) -> str:
    if backend == "onnxruntime":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}"


class TranslationBenchStage(Stage):
    name = "bench"
    sections = ("bench",)
    inputs = ("export",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        import torch

        from tlc_export.tasks.translation.stages.export import read_compress_rows
        from tlc_export.tasks.translation.tokenizer import TranslationTokenizers

        cfg, tcfg = ctx.recipe.bench, ctx.recipe.translation
        if cfg is None or tcfg is None:
            raise StageError("the translation bench stage needs the recipe's `translation` and `bench` sections")
        exp_file = ctx.input_dir("export") / "results.json"
        if not exp_file.is_file():
            raise StageError(f"{exp_file}: missing; run the export stage first")
        exp_rows = json.loads(exp_file.read_text())
        comp_rows = {r["variant"]: r for r in read_compress_rows(ctx)}
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.ctx, self.cfg, self.tcfg = ctx, cfg, tcfg
        self.family = ctx.family
        self.data = self.family.read(ctx.recipe)
        self.tok = TranslationTokenizers.load(ctx.run_dir.stage_dir("translation") / "tokenizer")
        self.sources = [p.source for p in list(self.data.dev)[: max(cfg.batch_sizes)]]
        if not self.sources:
            raise StageError("bench: the dev split is empty; nothing to time (check translation.data)")

        partial = ctx.out_dir / "rows.partial.jsonl"
        old = atomic.read_jsonl(partial)
        counts = Counter(_group(r) for r in old)
        rows = [r for r in old if counts[_group(r)] == r.get("_group_rows")]
        done = {_group(r) for r in rows}

        jobs: list[tuple[tuple[str, str, str], Any]] = []
        if "torch-eager" in cfg.backends:
            for r in comp_rows.values():
                if float(r.get("sparsity") or 0.0) == 0.0 and int(r["bits"]) >= 32:
                    jobs.append(((r["variant"], "torch-eager", "torch"), lambda r=r: self._torch(r)))
        if "onnxruntime" in cfg.backends:
            for e in exp_rows:
                jobs.append(((e["variant"], "onnxruntime", e["format"]), lambda e=e: self._onnx(e, comp_rows.get(e["variant"], {}))))
        for key, fn in jobs:
            if key in done:
                continue
            with ctx.console.status(f"bench {' '.join(key)}"):
                try:
                    new = fn()
                except (TlcError, RuntimeError, ValueError, OSError) as e:
                    new = [{"variant": key[0], "backend": key[1], "format": key[2], "batch_size": None,
                            "status": "failed", "reason": f"{type(e).__name__}: {e}", "decoding": "greedy"}]
            for r in new:
                atomic.append_jsonl(partial, {**r, "_group_rows": len(new)})
            rows.extend(new)
        rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        atomic.write_text(ctx.out_dir / "results.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in rows))
        atomic.write_json(ctx.out_dir / "results.json", rows)
        ctx.console.print(_table(rows, cfg.threads))
        status = Counter(r["status"] for r in rows)
        return {"results": "bench/results.jsonl", "rows": len(rows), **{f"rows_{k}": n for k, n in status.items()}}

    # -- rows ----------------------------------------------------------------------------------------
    def _base(self, variant: str, model: str | None, backend: str, fmt: str, r: dict[str, Any]) -> dict[str, Any]:
        return {"variant": variant, "model": model, "backend": backend, "format": fmt, "sparsity": r.get("sparsity"),
                "bits": r.get("bits"), "threads": self.cfg.threads, "decoding": "greedy",
                "max_length": self.tcfg.decoding.max_length, "runtime_version": _runtime_version(backend),
                "cpu": platform.processor() or platform.machine(), "status": "ok", "reason": None}

    def _timed_rows(self, base: dict[str, Any], decode: Any, timed: bool) -> list[dict[str, Any]]:
        from tlc_export.tasks.translation.timing import source_batches, time_decode

        if not timed:
            return [{**base, "batch_size": None, "timed": False, "sentences": None, "sentences_per_s": None,
                     "p50_ms": None, "p90_ms": None, "timing_note": "bench.latency_variants is dense: pruned files are not timed"}]
        out = []
        for b in self.cfg.batch_sizes:
            batches = source_batches(self.tok, self.sources, b, self.tcfg.max_source_length)
            out.append({**base, "batch_size": b, "timed": True,
                        **time_decode(decode, batches, self.cfg.warmup, self.cfg.runs)})
        return out

    def _torch(self, r: dict[str, Any]) -> list[dict[str, Any]]:
        from tlc_export.tasks.translation.stages.export import artifact_path, load_variant
        from tlc_export.tasks.translation.timing import torch_greedy

        model = load_variant(artifact_path(self.ctx, r))
        base = {**self._base(r["variant"], r.get("model"), "torch-eager", "torch", r), "kv_cache": True,
                "storage_bytes": r.get("storage_bytes"), "file_bytes": None}
        base.update(self._torch_bleu(r, model))
        return self._timed_rows(base, torch_greedy(model, self.tcfg.decoding.max_length), timed=True)

    def _torch_bleu(self, r: dict[str, Any], model: Any) -> dict[str, Any]:
        if r.get("decoding") == "greedy" and r.get("dev_bleu") is not None:
            return {**{k: r.get(k) for k in BLEU_FIELDS}, "predictions": r.get("predictions"),
                    "bleu_source": "compress/results.json (the same model, greedy)"}
        from tlc_export.tasks.translation.decode import translate
        from tlc_export.tasks.translation.metrics import TranslationPredictions

        preds = {}
        for split, pairs in (("dev", self.data.dev), ("test", self.data.test)):
            sources = [p.source for p in pairs]
            hyps = translate(model, self.tok, sources, self.tcfg.decoding, max_source_length=self.tcfg.max_source_length,
                             strategy="greedy")
            preds[split] = TranslationPredictions(sources, [p.target for p in pairs], hyps)
        path = self.ctx.out_dir / r["variant"] / "torch-eager" / "predictions.json"
        atomic.write_json(path, {s: vars(p) for s, p in preds.items()})
        fields = self.family.row_fields(preds)
        return {**{k: fields.get(k) for k in BLEU_FIELDS}, "predictions": str(path.relative_to(self.ctx.run_dir.root)),
                "bleu_source": "measured here (generate, greedy)"}

    def _onnx(self, e: dict[str, Any], comp: dict[str, Any]) -> list[dict[str, Any]]:
        from tlc_export.tasks.translation.onnx import OrtTranslator

        base = {**self._base(e["variant"], e.get("model"), "onnxruntime", e["format"], {**comp, **e}), "kv_cache": False,
                "storage_bytes": e.get("storage_bytes"), "file_bytes": e.get("file_bytes"),
                **{k: e.get(k) for k in BLEU_FIELDS}, "predictions": e.get("predictions"),
                "bleu_source": "export/results.json (the same files, plain session, greedy)"}
        if e.get("status") != "ok":
            return [{**base, "batch_size": None, "timed": False, "status": e.get("status") or "failed",
                     "reason": f"export: {e.get('reason') or 'no files written'}"}]
        folder = self.ctx.run_dir.root / e["folder"]
        ort = OrtTranslator.open(folder, threads=self.cfg.threads)
        max_length = self.tcfg.decoding.max_length
        timed = self.cfg.latency_variants == "all" or not float(e.get("sparsity") or 0.0)
        return self._timed_rows(base, lambda ids, mask: ort.greedy(ids, mask, max_length), timed)


def _group(r: dict[str, Any]) -> tuple[str, str, str]:
    return (r["variant"], r["backend"], r["format"])


def _table(rows: list[dict[str, Any]], threads: int | None) -> Table:
    t = Table(title=f"bench (translation, greedy, {threads or 'all'} threads; latency per sentence)")
    for c in ("variant", "backend", "format", "batch", "sent/s", "p50 ms", "p90 ms", "tok/sent", "MB", "dev BLEU", "test BLEU", "status"):
        t.add_column(c, justify="left" if c in ("variant", "backend", "format", "status") else "right")

    def f(x: Any, fmt: str = ".1f") -> str:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    for r in rows:
        size = r.get("file_bytes") or r.get("storage_bytes")
        ci = r.get("test_bleu_ci")
        t.add_row(r["variant"], r["backend"], r["format"], f(r.get("batch_size"), "d"), f(r.get("sentences_per_s")),
                  f(r.get("p50_ms")), f(r.get("p90_ms")), f(r.get("generated_tokens_per_sentence")),
                  f(size / 1e6 if size else None, ".2f"), f(r.get("dev_bleu"), ".2f"),
                  f(r.get("test_bleu"), ".2f") + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""), r.get("status", ""))
    return t

