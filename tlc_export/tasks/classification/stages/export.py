"""`export` stage: ONNX (and TensorRT) files of the finetuned and compressed classifiers, each validated.

Per size, one fp32 graph is exported (`export/<size>/graph.onnx`, from a randomized copy so every
parameter owns an initializer) and every file is that graph with the variant's weights written in:
fp32/fp16 values, the compress stage's own INT8/INT4 codes + DequantizeLinear, or ONNX Runtime's
quantizers applied to the variant's fp32 file. Every file is the variant it names, or a model of
its own whose row says so. Which variant feeds which format:
- fp32/fp16 and ORT's quantizers (int8-dynamic/int8-static/int4-matmulnbits), tensorrt-int8: the
  b32 (dense or pruned) model. The ORT-quantized files are models of their own (ORT's grids): their
  rows carry their own file size and accuracy and no `storage_bytes`;
- onnx-int8: the b8 and b6 artifacts (6-bit codes in the INT8 container; storage_bytes stays packed),
  their codes on ONNX Runtime's integer kernels (`tlc_export.export.integer`: DynamicQuantizeMatMul +
  the rank-1 correction of the paper's offset, activations quantized dynamically, validated within
  `int8-act` of the fake-quant model);
- onnx-int4: every 4-bit artifact, with exactly its codes on exactly its grid, on `export.int4_kernel`
  (codes widened to int8 at load, or MatMulNBits with float zero points); with
  `export.integer_kernels: false`, or when the integer file fails validation, both formats are the
  DequantizeLinear files (UINT4 `DequantizeLinear` then `Add(q0)` for the paper's grid), which compute
  the artifact's model exactly;
- tensorrt-int4: only 4-bit artifacts whose grid TensorRT takes (symmetric INT4, block 64/128 on
  weight matrices: the compress stage's `….b4.sym-g<block>` variants). No variant is re-quantized here.
Every file's accuracy is measured with a plain ONNX Runtime session (what a deployment and the bench
run) on dev and test, its per-example predictions stored beside it (`<format>.predictions.npz`).
Without TensorRT, tensorrt-* rows are `unavailable` (with the reason), never `failed`.
Rows are appended to `rows.jsonl` as they finish, so an interrupted run resumes; `results.json` is
the final list.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from rich.table import Table

from tlc_export.atomic import read_jsonl, write_json
from tlc_export.compress.variants import INT8_CODE_BITS
from tlc_export.errors import BackendUnavailable, StageError
from tlc_export.export.rows import attempt, record
from tlc_export.scoring import SPLITS, accuracy_fields
from tlc_export.stages.base import StageContext
from tlc_export.stages.export_rows import ExportStep, kept_rows

WEIGHT_ONLY_ACC_POINTS = 0.3  # same function ⇒ same accuracy; 0.3 points allows argmax ties
ACT_QUANT = {"onnx-int8-dynamic", "onnx-int8-static", "onnx-int4-matmulnbits"}
# Which compress variant each format is written from (the b32 rows: dense or pruned fp32 models).
FP_FORMATS = ("onnx-fp32", "onnx-fp16", "onnx-int8-dynamic", "onnx-int8-static", "onnx-int4-matmulnbits", "tensorrt-int8")
INT8_CODE_FORMATS = ("onnx-int8",)


# Measured by runtime_bench.own_codes_speed (README, bench section): on CPU the static Q/DQ file is larger and
# slower than onnx-int8-dynamic, so it is not a CPU deployment format; TensorRT takes only explicit Q/DQ.
STATIC_ROLE = "TensorRT's input (static Q/DQ); on CPU use onnx-int8-dynamic or the own-code onnx-int8/onnx-int4"
INT8_FUSED_SLACK = 1.5  # a fused INT8 file may be this much further from fp32 than the unfused one (plus TOLERANCE_FP32)
TOLERANCE_FP32 = 1e-3


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _variant(size: str, sparsity: float, bits: int) -> str:
    return f"{size}.s{round(sparsity * 100):02d}.b{bits}"


def _load_hf(path: Path) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    if not path.is_dir():
        raise StageError(f"{path}: model folder missing; rerun the finetune/compress stage")
    return AutoModelForSequenceClassification.from_pretrained(str(path)).float().eval()


class ExportStage(ExportStep):

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from tlc_export.data import load_tokenizer
        from tlc_export.export import validate as V
        cfg = ctx.recipe.export
        formats = list(ctx.options.get("formats") or cfg.formats)
        comp_dir = ctx.input_dir("compress")
        res_file = comp_dir / "results.json"
        if not res_file.is_file():
            raise StageError(f"{res_file}: missing; run the compress stage first")
        comp_rows: list[dict[str, Any]] = json.loads(res_file.read_text())
        ft_dir = ctx.input_dir("finetune")
        task = ctx.family.read(ctx.recipe)
        max_len = ctx.recipe.finetune.max_length
        splits = {"dev": task.dev, "test": task.test}

        rows_file = ctx.out_dir / "rows.jsonl"
        # Resume: keep finished rows whose file is still there; failed/unavailable ones are tried again.
        done = {(r["variant"], r["format"]): r for r in read_jsonl(rows_file)
                if r.get("status") == "ok" and (r.get("path") is None or (ctx.run_dir.root / r["path"]).exists())}
        planned: set[tuple[str, str]] = set()
        # `tlc package` exports one variant the recipe's export.sparsity left out (options["variants"]).
        only = set(ctx.options.get("variants") or ())
        sizes = sorted({r["model"] for r in comp_rows if not only or r["variant"] in only})
        for size in sizes:
            model_dir = ft_dir / size / "model"
            tok = load_tokenizer(model_dir)
            # Every file is scored with `tlc predict`'s batches (sorted by length, each padded to its
            # longest row), so a bundle reproduces its row's accuracy exactly, dynamic INT8 included.
            acc_batches = {name: V.encode_by_length(model_dir, ex, max_len, 32) for name, ex in splits.items()}
            val_batches = V.encode(tok, splits[cfg.accuracy_split][: cfg.validation_samples], max_len, 8)
            cal_batches = V.encode(tok, task.train[: cfg.calibration_samples], max_len, 8)
            dense = _load_hf(model_dir)
            template = self._template(ctx, size, dense)
            rows = [r for r in comp_rows if r["model"] == size]
            levels = sorted({float(r.get("sparsity") or 0.0) for r in rows} | {0.0})
            if only:
                levels = [s for s in levels if any(r["variant"] in only and math.isclose(float(r.get("sparsity") or 0.0), s,
                                                                                         abs_tol=1e-6) for r in rows)]
            elif cfg.sparsity is not None:
                want = set(cfg.sparsity) | {0.0}
                levels = [s for s in levels if any(math.isclose(s, w, abs_tol=1e-6) for w in want)]
            job = _SizeJob(ctx, size, template, formats, done, rows_file, acc_batches, val_batches, cal_batches, planned)
            for s in levels:
                fp_model = dense if s == 0 else _load_hf(self._pruned_dir(ctx, rows, s))
                b32 = _variant(size, s, 32)
                if not only or b32 in only:
                    job.fp_variant(b32, fp_model, s)
                level_rows = [r for r in rows if math.isclose(float(r.get("sparsity") or 0.0), s, abs_tol=1e-6)]
                for r in level_rows:
                    if int(r["bits"]) < 32 and (not only or r["variant"] in only):
                        job.quant_variant(r)
                if "onnx-int4" in formats and (not only or b32 in only) and not any(int(r["bits"]) == 4 for r in level_rows):
                    ctx.console.print(f"[yellow]{size} s{round(s * 100):02d}: no 4-bit variant in compress, so no onnx-int4 file "
                                      "(add 4 to compress.quantize.bits)[/yellow]")
                if "tensorrt-int4" in formats and (not only or b32 in only) and not any(r.get("tensorrt_int4") for r in level_rows):
                    ctx.console.print(f"[yellow]{size} s{round(s * 100):02d}: no TensorRT INT4 variant in compress, so no "
                                      "tensorrt-int4 file (set compress.quantize.tensorrt_int4_block: 64 or 128)[/yellow]")
        # Rows of earlier runs for pairs this run does not produce (other formats/levels) are dropped,
        # except under `tlc export --formats`, which rebuilds only the formats it names.
        latest = {(r["variant"], r["format"]): r for r in read_jsonl(rows_file)}
        all_rows = kept_rows(ctx, formats) + [r for k, r in latest.items() if k in planned and r["format"] in formats]
        write_json(ctx.out_dir / "results.json", all_rows)
        self._table(ctx, all_rows)
        ok = sum(r["status"] == "ok" for r in all_rows)
        return {"results": "export/results.json", "files_ok": ok, "rows": len(all_rows)}

    def _template(self, ctx: StageContext, size: str, model: torch.nn.Module):
        from tlc_export.export.onnx_export import export_template

        with ctx.console.status(f"exporting the {size} graph (dynamo)"):
            return export_template(model, ctx.out_dir / size / "graph.onnx", opset=ctx.recipe.export.opset)

    @staticmethod
    def _pruned_dir(ctx: StageContext, rows: list[dict[str, Any]], s: float) -> Path:
        for r in rows:
            if math.isclose(float(r.get("sparsity") or 0.0), s, abs_tol=1e-6) and r.get("pruned_model_dir"):
                p = Path(r["pruned_model_dir"])
                return p if p.is_absolute() else ctx.run_dir.root / p
        raise StageError(f"compress/results.json: no pruned_model_dir for sparsity {s}; rerun the compress stage")

    @staticmethod
    def _table(ctx: StageContext, rows: list[dict[str, Any]]) -> None:
        t = Table(title="export")
        for c in ("variant", "format", "MB", "max|Δ|", "dev acc", "test acc", "acc torch", "status"):
            t.add_column(c)
        for r in rows:
            fmt = lambda x: "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"  # noqa: E731
            t.add_row(r["variant"], r["format"], fmt((r.get("file_bytes") or 0) / 1e6), fmt(r.get("max_abs_diff")),
                      fmt(r.get("dev_accuracy")), fmt(r.get("test_accuracy")), fmt(r.get("dev_accuracy_torch")), r["status"])
        ctx.console.print(t)


def fusable_int4(model) -> bool:
    """True when an INT4 block DequantizeLinear feeds a MatMul directly: the pattern ORT's default CPU
    session fuses into MatMulNBits with int8 activations (so a plain session is not the exact function).
    The paper's per-tensor grid (DequantizeLinear → Add(q0) → MatMul) is never fused."""
    import onnx

    feeds_matmul = {n.input[1] for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1}
    int4 = {i.name for i in model.graph.initializer if i.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)}
    return any(n.op_type == "DequantizeLinear" and n.input[0] in int4 and n.output[0] in feeds_matmul
               and any(a.name == "block_size" and a.i > 0 for a in n.attribute) for n in model.graph.node)


class _SizeJob:
    """Exports of one model size; each format is one guarded step that appends one row."""

    def __init__(self, ctx, size, template, formats, done, rows_file, acc_b, val_b, cal_b, planned) -> None:
        self.ctx, self.size, self.template, self.formats = ctx, size, template, formats
        self.planned: set[tuple[str, str]] = planned
        self.done, self.rows_file = done, rows_file
        self.acc_b, self.val_b, self.cal_b = acc_b, val_b, cal_b
        self.cfg = ctx.recipe.export
        self._validated: dict[Path, dict[str, Any]] = {}  # a file validated once this run is not validated again

    def _path(self, variant: str, fmt: str, ext: str = ".onnx") -> Path:
        return self.ctx.out_dir / self.size / variant / f"{fmt}{ext}"

    def _rel(self, p: Path) -> str:
        return str(p.relative_to(self.ctx.run_dir.root))

    def _step(self, variant: str, fmt: str, fn, **extra: Any) -> dict[str, Any] | None:
        if fmt not in self.formats:
            return None
        if (variant, fmt) in self.done:
            return self.done[(variant, fmt)]
        row: dict[str, Any] = {"variant": variant, "model": self.size, "format": fmt, "path": None,
                               "file_bytes": None, "storage_bytes": None, "max_abs_diff": None, "tolerance": None,
                               "dev_accuracy_onnx": None, "dev_accuracy_torch": None, "status": "ok", "reason": None, **extra}
        return record(attempt(row, fn), self.rows_file, self.done, self.ctx.console)

    def _validate(self, path: Path, ref_model, tol: float | None, torch_acc: float, weight_only: bool,
                  int4_dq: bool = False, relative: bool = False) -> dict[str, Any]:
        """Checker, logits against `ref_model` (exact session), then the file's own accuracy on dev and
        test through a plain session, with its per-example predictions stored beside it."""
        from tlc_export.export import validate as V
        from tlc_export.predictions import SplitPredictions, save_predictions

        V.check(path)
        sess = V.session(path, exact=True)
        d, t, _ = V.compare(path, V.torch_logits(ref_model, self.val_b), self.val_b, tol, sess=sess, relative=relative)
        # A plain session (what deployments and the bench run) differs from the exact one only where ORT
        # fuses INT4 DequantizeLinear+MatMul with int8 activations; elsewhere the two are the same session.
        plain = V.session(path) if int4_dq else sess
        preds = {}
        for split in SPLITS:
            batches = self.acc_b[split]
            # Back in example order, so they pair with every other model's predictions on the same examples.
            preds[split] = SplitPredictions(V.in_example_order([lg.argmax(-1) for lg in V.onnx_logits(plain, batches)], batches),
                                            V.in_example_order([b.labels for b in batches], batches))
        split = self.cfg.accuracy_split
        acc = V.accuracy(V.onnx_logits(sess, self.acc_b[split]), self.acc_b[split]) if int4_dq else preds[split].accuracy
        pred_path = path.with_name(path.stem + ".predictions.npz")
        save_predictions(pred_path, preds)
        out = {"path": self._rel(path), "file_bytes": path.stat().st_size, "max_abs_diff": d,
               "tolerance": None if tol is None else t,
               # exact-session accuracy on export.accuracy_split, compared with PyTorch's on the same split
               "dev_accuracy_onnx": acc, "dev_accuracy_torch": torch_acc, "accuracy_diff_points": 100 * (acc - torch_acc),
               "dev_accuracy_onnx_ort_default": preds[split].accuracy, "accuracy_check_split": split,
               # the file's own accuracy through a plain session, on every split
               **accuracy_fields(preds), "accuracy_session": "plain onnxruntime CPU session",
               "predictions": self._rel(pred_path)}
        if weight_only and abs(acc - torch_acc) * 100 > WEIGHT_ONLY_ACC_POINTS:
            raise StageError(f"{path}: accuracy {acc:.4f} vs PyTorch {torch_acc:.4f} differs by more than "
                             f"{WEIGHT_ONLY_ACC_POINTS} points for a weight-only format")
        return out

    def _torch_acc(self, model) -> float:
        from tlc_export.export import validate as V

        batches = self.acc_b[self.cfg.accuracy_split]
        return V.accuracy(V.torch_logits(model, batches), batches)

    def _cpu_file(self, raw: Path, dst: Path, ref_model, tol: float, acc: float, int4_dq: bool = False) -> dict[str, Any]:
        """The ONNX Runtime CPU file of a same-function format: the fused graph of `raw`
        (`tlc_export.export.optimize`) when it passes the same validation as any file (checker, logits
        within `tol`, accuracy), else `raw` itself, with the reason in `graph_optimization`."""
        from tlc_export.export.optimize import GraphOptimization, optimize_for_cpu

        if not self.cfg.optimize_cpu_graph:
            opt = GraphOptimization(False, reason="export.optimize_cpu_graph is false")
        else:
            try:
                c = ref_model.config
                opt = optimize_for_cpu(raw, dst, int(c.num_attention_heads), int(c.hidden_size))
                out = self._validate(dst, ref_model, tol, acc, True, int4_dq=int4_dq)
                return {**out, "graph_optimization": opt.to_dict(), "unfused_path": self._rel(raw)}
            except Exception as e:  # noqa: BLE001 - whatever breaks the fused file, the exporter's graph remains
                dst.unlink(missing_ok=True)
                opt = GraphOptimization(False, reason=_reason(e))
                self.ctx.console.print(f"[yellow]{dst.name}: graph optimization not applied:[/yellow] {escape(opt.reason or '')[:200]}")
        out = self._validate(raw, ref_model, tol, acc, True, int4_dq=int4_dq)
        return {**out, "graph_optimization": opt.to_dict(), "unfused_path": self._rel(raw)}

    def _int8_dynamic(self, variant: str, raw: Path, fused: Path | None, model, acc: float) -> dict[str, Any]:
        """ORT's dynamic INT8 quantization of the fused fp32 graph, kept when its logits are as close to the
        fp32 model as those of the unfused graph quantized the same way (both are ORT's grid, not ours);
        otherwise the unfused INT8 file, with the reason."""
        from tlc_export.export import ort_quant
        from tlc_export.export import validate as V
        from tlc_export.export.optimize import GraphOptimization

        dst = self._path(variant, "onnx-int8-dynamic")
        unfused = self._path(variant, "onnx-int8-dynamic", ".unfused.onnx")
        ort_quant.quantize_int8_dynamic(raw, unfused)
        if fused is None:
            opt = GraphOptimization(False, reason="the fp32 graph was not fused (see the onnx-fp32 row)"
                                    if self.cfg.optimize_cpu_graph else "export.optimize_cpu_graph is false")
        else:
            ref = V.torch_logits(model, self.val_b)
            d_unfused, scale = V.max_abs_diff(V.onnx_logits(V.session(unfused), self.val_b), ref)
            limit = INT8_FUSED_SLACK * d_unfused + TOLERANCE_FP32 * max(1.0, scale)
            try:
                ort_quant.quantize_int8_dynamic(fused, dst)
                out = self._validate(dst, model, None, acc, False)
                if not out["max_abs_diff"] <= limit:
                    raise StageError(f"fused INT8 max |Δ logit| {out['max_abs_diff']:.3g} vs fp32 exceeds {limit:.3g} "
                                     f"({INT8_FUSED_SLACK}× the unfused INT8 file's {d_unfused:.3g} + {TOLERANCE_FP32:g})")
                fp32_opt = (self.done.get((variant, "onnx-fp32")) or {}).get("graph_optimization") or {}
                opt = GraphOptimization(True, fp32_opt.get("fusions", {}), fp32_opt.get("attention_fused", 0),
                                        fp32_opt.get("nodes_before", 0), fp32_opt.get("nodes_after", 0))
                return {**out, "graph_optimization": {**opt.to_dict(), "quantized_from": self._rel(fused),
                                                      "unfused_max_abs_diff": d_unfused},
                        "unfused_path": self._rel(unfused)}
            except Exception as e:  # noqa: BLE001 - the unfused INT8 file remains
                dst.unlink(missing_ok=True)
                opt = GraphOptimization(False, reason=_reason(e))
                self.ctx.console.print(f"[yellow]{variant} onnx-int8-dynamic: fused graph not used:[/yellow] {escape(opt.reason or '')[:200]}")
        out = self._validate(unfused, model, None, acc, False)
        return {**out, "graph_optimization": opt.to_dict(), "unfused_path": self._rel(unfused)}

    def fp_variant(self, variant: str, model, sparsity: float) -> None:
        from tlc_export.export import ort_quant
        from tlc_export.export.int4 import to_fp16
        from tlc_export.export.onnx_export import save_model
        from tlc_export.export.qdq import rewrite_weights
        from tlc_export.export.validate import TOLERANCE

        for f in FP_FORMATS:
            self.planned.add((variant, f))
        if not any(f in self.formats and (variant, f) not in self.done for f in FP_FORMATS):
            return
        acc = self._torch_acc(model)
        sd = {k: v for k, v in model.state_dict().items()}
        raw = self._path(variant, "onnx-fp32", ".unfused.onnx")
        fp32 = self._path(variant, "onnx-fp32")
        extra = {"exporter": self.template.exporter, "densified": sparsity > 0}

        def ensure_fp32() -> Path:
            """The exporter's graph with this variant's weights: what fp16, ORT's quantizers and TensorRT start from."""
            if not raw.is_file():
                proto = self.template.load()
                rewrite_weights(proto, self.template.refs, {}, sd)
                save_model(proto, raw)
            return raw

        fp32_row: dict[str, Any] = {}

        def f32() -> dict[str, Any]:
            if not fp32_row:
                fp32_row.update(self._cpu_file(ensure_fp32(), fp32, model, TOLERANCE["fp32"], acc))
            return fp32_row

        def fused_fp32() -> Path | None:
            """The validated fused fp32 file (built even when onnx-fp32 is not a requested format), or None."""
            row = self.done.get((variant, "onnx-fp32")) or f32()
            applied = (row.get("graph_optimization") or {}).get("applied")
            return fp32 if applied and fp32.is_file() else None

        def int8_dynamic() -> dict[str, Any]:
            return self._int8_dynamic(variant, ensure_fp32(), fused_fp32() if self.cfg.optimize_cpu_graph else None, model, acc)

        def f16() -> dict[str, Any]:
            p = self._path(variant, "onnx-fp16")
            proto = self.template.load()
            rewrite_weights(proto, self.template.refs, {}, sd)
            save_model(to_fp16(proto), p)
            return self._validate(p, model, TOLERANCE["fp16"], acc, True)

        def ort_fmt(fmt: str, fn) -> dict[str, Any]:
            p = self._path(variant, fmt)
            fn(ensure_fp32(), p)
            return self._validate(p, model, None, acc, False)

        static = self._path(variant, "onnx-int8-static")

        def ensure_static() -> Path:
            if not static.is_file():
                ort_quant.quantize_int8_static(ensure_fp32(), static, self.cal_b,
                                               attention_matmuls=self.cfg.int8_attention_matmuls)
            return static

        def trt_int8() -> dict[str, Any]:
            # The engine's input: the static Q/DQ file (built here even when onnx-int8-static is not a
            # requested format) as an fp16 graph, so non-quantized layers run in fp16, not fp32/TF32.
            from tlc_export.export.tensorrt import int8_fp16_qdq

            p = int8_fp16_qdq(ensure_static(), self._path(variant, "tensorrt-int8"))
            out = self._validate(p, model, None, acc, False)
            # The engine's own accuracy is measured by the bench on the GPU; the ONNX file's is not the engine's.
            onnx_file = {k: out[k] for k in ("max_abs_diff", "dev_accuracy_onnx", "dev_accuracy_torch", "accuracy_diff_points")}
            return {**onnx_file, **self._engine(p, "int8", variant),
                    "attention_matmuls_quantized": self.cfg.int8_attention_matmuls}

        # fp32 is written even when only derived formats are asked for (they quantize it).
        self._step(variant, "onnx-fp32", f32, **extra)
        self._step(variant, "onnx-fp16", f16, **extra)
        self._step(variant, "onnx-int8-dynamic", int8_dynamic, **extra)

        def static_row() -> dict[str, Any]:
            p = ensure_static()
            self._validated[p] = self._validate(p, model, None, acc, False)  # tensorrt-int8 reads the same file
            return {**self._validated[p], "attention_matmuls_quantized": self.cfg.int8_attention_matmuls}

        self._step(variant, "onnx-int8-static", static_row, **extra, role=STATIC_ROLE)
        self._step(variant, "onnx-int4-matmulnbits", lambda: ort_fmt(
            "onnx-int4-matmulnbits", lambda a, b: ort_quant.quantize_int4_matmulnbits(a, b, self.cfg.int4_block_size)), **extra)
        self._step(variant, "tensorrt-int8", trt_int8, **extra)

    def _engine(self, onnx_path: Path, precision: str, variant: str) -> dict[str, Any]:
        """Engine from an ONNX file that passed the TensorRT rules; `unavailable` (not failed) without TensorRT."""
        from tlc_export.export.tensorrt import build_engine, profile_shapes
        from tlc_export.export.trt_rules import check_tensorrt_onnx

        violations = check_tensorrt_onnx(onnx_path, precision)  # type: ignore[arg-type]
        base = {"onnx_path": self._rel(onnx_path), "trt_violations": [str(v) for v in violations]}
        if violations:
            raise StageError(f"{onnx_path}: breaks TensorRT rules: {'; '.join(map(str, violations[:3]))}")
        eng = self._path(variant, f"tensorrt-{precision}", ".engine")
        try:
            shapes = profile_shapes(self.cfg.trt_opt_batches, self.cfg.trt_max_batch, self.cfg.trt_max_seq_len)
            info = build_engine(onnx_path, precision, shapes, eng, timing_cache=self.ctx.out_dir / "trt_timing.cache")
        except BackendUnavailable as e:
            return {**base, "path": None, "file_bytes": None, "status": "unavailable", "tensorrt_version": None,
                    "reason": f"{e} (ONNX {base['onnx_path']} passes the TensorRT rules)"}
        return {**base, "path": self._rel(eng), "engine_path": self._rel(eng), "file_bytes": int(info["bytes"]),
                "tensorrt_version": info["tensorrt_version"], "trt_profiles": info["profiles"],
                "gpu": info.get("gpu")}  # an engine runs only on this GPU model (tlc package checks it)

    def _artifact(self, row: dict[str, Any]):
        from tlc_export.compress.artifact import load_artifact

        art_path = Path(row["artifact"])
        if not art_path.is_absolute():
            # compress rows name artifacts relative to the run directory (older ones: to compress/)
            cands = [self.ctx.run_dir.root / art_path, self.ctx.input_dir("compress") / art_path]
            art_path = next((c for c in cands if c.is_file()), cands[0])
        return load_artifact(art_path)

    def quant_variant(self, row: dict[str, Any]) -> None:
        """onnx-int8 from 8-/6-bit artifacts (their codes in the INT8 container); onnx-int4 from every
        4-bit artifact and tensorrt-int4 from those on TensorRT's grid, always with the artifact's own codes."""
        from tlc_export.compress.artifact import build_model
        from tlc_export.export.int4 import tensorrt_int4_ready
        from tlc_export.export.onnx_export import save_model
        from tlc_export.export.qdq import rewrite_weights
        from tlc_export.export.validate import TOLERANCE

        bits = int(row["bits"])
        variant = row["variant"]
        fmts: tuple[str, ...] = ()
        if bits in INT8_CODE_BITS:
            fmts = INT8_CODE_FORMATS
        elif bits == 4:
            fmts = ("onnx-int4", "tensorrt-int4") if row.get("tensorrt_int4") else ("onnx-int4",)
        for f in fmts:
            self.planned.add((variant, f))
        if not any(f in self.formats and (variant, f) not in self.done for f in fmts):
            return
        art = self._artifact(row)
        model = build_model(art).float()
        acc = self._torch_acc(model)
        # storage_bytes is the packed artifact: these files hold exactly its codes (6-bit codes take 6
        # bits in the artifact, 8 in the ONNX container).
        extra = {"storage_bytes": row.get("storage_bytes"), "bits": bits, "source": row["artifact"], "codes": "compress",
                 "densified": float(row.get("sparsity") or 0) > 0}

        def int8_dequantized() -> dict[str, Any]:
            p = self._path(variant, "onnx-int8")
            raw = self._path(variant, "onnx-int8", ".unfused.onnx")
            proto = self.template.load()
            rewrite_weights(proto, self.template.refs, art.quantized, art.dense, container="int8")
            save_model(proto, raw)
            return {**self._cpu_file(raw, p, model, TOLERANCE["fp32"], acc), "codes": "compress", "kernels": "DequantizeLinear"}

        def int8() -> dict[str, Any]:
            if not self.cfg.integer_kernels:
                return int8_dequantized()
            return self._integer(variant, "onnx-int8", model, acc, art, row, int8_dequantized, four_bit=False)

        if bits in INT8_CODE_BITS:
            self._step(variant, "onnx-int8", int8, **extra)
            return
        if "tensorrt-int4" in fmts and not tensorrt_int4_ready(art.quantized):
            raise StageError(f"{row['artifact']}: marked tensorrt_int4 but its codes are not symmetric INT4 blocks of "
                             "64/128; rerun the compress stage")
        self._int4(variant, model, acc, art.quantized, art.state_dict(), extra, fmts, art=art, comp_row=row)

    def _integer(self, variant: str, fmt: str, model, acc: float, art, comp_row: dict[str, Any], fallback,
                 four_bit: bool) -> dict[str, Any]:
        """The variant's codes on ONNX Runtime's integer kernels (`tlc_export.export.integer`), validated
        against the fake-quant model (tolerance `int8-act` where activations are quantized dynamically,
        `fp32` where the kernel computes in fp32), with its accuracy set against the compress stage's
        interval. When it fails (ExportMismatchError beyond the tolerance, or a graph the kernels cannot take) the
        row is the DequantizeLinear file (`fallback()`) instead, with the reason in `integer_kernels`."""
        from tlc_export.export.integer import integer_model
        from tlc_export.export.onnx_export import save_model
        from tlc_export.export.validate import RELATIVE, TOLERANCE

        kernel = self.cfg.int4_kernel if four_bit else None
        p = self._path(variant, fmt)
        exact, tol_name = False, "int8-act"
        try:
            c = model.config
            proto, report, opt = integer_model(self.template.load(), self.template.refs, art.quantized, art.state_dict(),
                                               int(c.num_attention_heads), int(c.hidden_size), four_bit=four_bit,
                                               int4_kernel=kernel or "matmulnbits-acc0")
            # Exact (fp32 tolerance) only when no weight went to DynamicQuantizeMatMul: MatMulNBits with float
            # zero points computes in fp32 (block grids always take it, whatever export.int4_kernel says).
            exact = not (report.dynamic_matmul or report.integer_matmul or report.qattention)  # activations quantized dynamically
            tol_name = "fp32" if exact else "int8-act"
            save_model(proto, p)
            out = self._validate(p, model, TOLERANCE[tol_name], acc, weight_only=exact, relative=tol_name in RELATIVE)
        except Exception as e:  # noqa: BLE001 - a mismatch or an unsupported graph keeps the DequantizeLinear file
            p.unlink(missing_ok=True)
            self.ctx.console.print(f"[yellow]{variant} {fmt}: integer kernels not used:[/yellow] {escape(_reason(e))[:200]}")
            return {**fallback(), "integer_kernels": {"applied": False, "reason": _reason(e)}}
        within = {}
        for split in SPLITS:
            ci = comp_row.get(f"{split}_accuracy_ci")
            if ci and out.get(f"{split}_accuracy") is not None:
                within[split] = bool(ci[0] <= out[f"{split}_accuracy"] <= ci[1])
        return {**out, "codes": "compress", "graph_optimization": opt, "tolerance_name": tol_name,
                "kernels": "+".join(k for k, used in (("DynamicQuantizeMatMul", report.dynamic_matmul),
                                                       ("MatMulIntegerToFloat", report.integer_matmul),
                                                       ("QAttention", report.qattention),
                                                       ("MatMulNBits", report.matmul_nbits),
                                                       ("GatherBlockQuantized", report.gather_quantized),
                                                       ("Gather+DequantizeLinear", report.gather_dequantized),
                                                       ("DequantizeLinear", report.fallback)) if used),
                "activations": "fp32" if exact else "dynamic uint8, per tensor (as onnx-int8-dynamic)",
                "integer_kernels": {"applied": True, **report.to_dict()},
                "compress_accuracy": {s: comp_row.get(f"{s}_accuracy") for s in SPLITS},
                "within_compress_ci": within}

    def _int4(self, variant: str, model, acc: float, quantized, state: dict[str, torch.Tensor],
              extra: dict[str, Any], fmts: tuple[str, ...], art=None, comp_row: dict[str, Any] | None = None) -> None:
        """onnx-int4 / tensorrt-int4 rows: the artifact's codes on its own grid. `state` holds every
        parameter's value in `model` (fake-quant or fp32): parameters without INT4 codes (1-D, excluded)
        carry exactly these values, so the file computes `model`."""
        from tlc_export.export.int4 import int4_model
        from tlc_export.export.onnx_export import save_model
        from tlc_export.export.validate import TOLERANCE

        def build(fmt: str) -> dict[str, Any]:
            trt = fmt == "tensorrt-int4"
            proto = int4_model(self.template.load(), self.template.refs, quantized, state, fp16=trt, matmul_only=trt)
            p = self._path(variant, fmt)
            tol = TOLERANCE["fp16" if trt else "fp32"]
            dq = fusable_int4(proto)
            if trt:  # TensorRT parses standard ONNX only: no CPU fusions
                save_model(proto, p)
                out = self._validate(p, model, tol, acc, True, int4_dq=dq)
            else:
                raw = self._path(variant, fmt, ".unfused.onnx")
                save_model(proto, raw)
                out = self._cpu_file(raw, p, model, tol, acc, int4_dq=dq)
            if trt:
                # The ONNX file's accuracy is not the engine's: the bench measures the engine on the GPU.
                for k in [k for k in out if k.startswith(SPLITS) or k in ("majority_accuracy", "majority_label",
                                                                         "learned_task", "above_majority_p", "predictions")]:
                    out[f"onnx_{k}"] = out.pop(k)
                out["onnx_path"] = out["path"]
                out.update(self._engine(p, "int4", variant))
            return out

        def cpu4() -> dict[str, Any]:
            if not self.cfg.integer_kernels or art is None:
                return {**build("onnx-int4"), "kernels": "DequantizeLinear"}
            return self._integer(variant, "onnx-int4", model, acc, art, comp_row or {}, lambda: build("onnx-int4"),
                                 four_bit=True)

        for fmt in fmts:
            self._step(variant, fmt, cpu4 if fmt == "onnx-int4" else lambda fmt=fmt: build(fmt), **extra)
