"""`export` stage of the translation family: every compress variant as an ONNX encoder/decoder pair,
validated against PyTorch, scored with BLEU/chrF through a plain onnxruntime greedy loop.

```
export/<size>/template/              the pair exported once per size (randomized copy) + refs.json
export/<variant>/<format>/encoder.onnx, decoder.onnx, predictions.json
export/rows.jsonl                    one row per (variant, format), appended as each finishes (resume)
export/results.json                  the rows of this run
```
Formats (`export.formats` ∩ the family's), from which variant:
- onnx-fp32: the b32 variant (dense, or each pruned level of `export.sparsity`); its greedy tokens must
  equal PyTorch `generate` (greedy) token for token on `export.validation_samples` dev sentences, else
  ExportMismatchError (the row fails with the reason);
- onnx-int8-dynamic: ONNX Runtime's `quantize_dynamic` of the b32 files (a model of its own: its own
  grid, so no storage_bytes); its agreement with PyTorch is recorded, never enforced;
- onnx-int8 / onnx-int4: the b8 (and b6) / b4 variants' own codes (DequantizeLinear initializers), checked
  against the fake-quant PyTorch variant: teacher-forced logits within `TOLERANCE["fp32"]` (same function,
  only summation order differs) and greedy token agreement ≥ `OWN_CODE_MIN_TOKEN_AGREEMENT`.
Checks run in exact sessions (no run-time INT4 fusion); BLEU runs in plain sessions, what deployments and
the bench run. Every row's decoding is greedy (the files hold no beam search).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from tlc_export.atomic import read_jsonl, write_json
from tlc_export.compress.variants import INT8_CODE_BITS
from tlc_export.errors import ExportMismatchError, StageError
from tlc_export.export.rows import attempt, record
from tlc_export.stages.base import Stage, StageContext
from tlc_export.stages.export_rows import kept_rows

# Own-code files compute the fake-quant model up to summation order; a near-tie between two logits can
# still flip one argmax and change the rest of that sentence, so greedy agreement is a threshold, not
# equality (the teacher-forced logits check is the exact one).
OWN_CODE_MIN_TOKEN_AGREEMENT = 0.95
TEACHER_FORCED_SENTENCES = 8
FP_FORMATS = ("onnx-fp32", "onnx-int8-dynamic")
CODE_FORMATS = {"onnx-int8": INT8_CODE_BITS, "onnx-int4": (4,)}


def load_variant(path: Path) -> Any:
    """The variant's PyTorch model exactly as the compress stage scored it (eval, fp32)."""
    from tlc_export.tasks.translation.compress import load_translation_variant

    return load_translation_variant(path).float().eval()


def artifact_path(ctx: StageContext, row: dict[str, Any]) -> Path:
    p = Path(row["artifact"])
    if p.is_absolute():
        return p
    cands = [ctx.run_dir.root / p, ctx.input_dir("compress") / p]
    return next((c for c in cands if c.is_file()), cands[0])


def read_compress_rows(ctx: StageContext) -> list[dict[str, Any]]:
    path = ctx.input_dir("compress") / "results.json"
    if not path.is_file():
        raise StageError(f"{path}: missing; run the compress stage first")
    rows = json.loads(path.read_text())
    if isinstance(rows, dict):
        rows = rows.get("variants", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "variant" in r and "artifact" in r for r in rows):
        raise StageError(f"{path}: expected a list of variant rows with `variant` and `artifact`; rerun the compress stage")
    return rows


def _sparsity(r: dict[str, Any]) -> float:
    return float(r.get("sparsity") or 0.0)


class TranslationExportStage(Stage):
    name = "export"
    sections = ("export",)
    inputs = ("compress",)
    unkeyed_options = frozenset({"formats"})  # `tlc export --formats`: build these, keep the other formats' files

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from tlc_export.config.translation import EXPORT_FORMATS
        from tlc_export.tasks.translation.tokenizer import TranslationTokenizers

        cfg, tcfg = ctx.recipe.export, ctx.recipe.translation
        if cfg is None or tcfg is None:
            raise StageError("the translation export stage needs the recipe's `translation` and `export` sections")
        wanted = list(ctx.options.get("formats") or cfg.formats)
        formats = [f for f in wanted if f in EXPORT_FORMATS]
        comp_rows = read_compress_rows(ctx)
        tok_dir = ctx.run_dir.stage_dir("translation") / "tokenizer"
        if not tok_dir.is_dir():
            raise StageError(f"{tok_dir}: the translation tokenizer is missing; run the translation stage first")
        family = ctx.family
        data = family.read(ctx.recipe)
        job = _Job(ctx, family, TranslationTokenizers.load(tok_dir), data, formats)
        only = set(ctx.options.get("variants") or ())
        for size in sorted({r["model"] for r in comp_rows if not only or r["variant"] in only}):
            rows = [r for r in comp_rows if r["model"] == size and (not only or r["variant"] in only)]
            levels = sorted({_sparsity(r) for r in rows})
            if cfg.sparsity is not None and not only:
                want = set(cfg.sparsity) | {0.0}
                levels = [s for s in levels if any(math.isclose(s, w, abs_tol=1e-6) for w in want)]
            for s in levels:
                for r in sorted((r for r in rows if math.isclose(_sparsity(r), s, abs_tol=1e-6)), key=lambda r: -int(r["bits"])):
                    job.variant(size, r)
        latest = {(r["variant"], r["format"]): r for r in read_jsonl(job.rows_file)}
        all_rows = kept_rows(ctx, formats) + [r for k, r in latest.items() if k in job.planned]
        write_json(ctx.out_dir / "results.json", all_rows)
        ctx.console.print(_table(all_rows))
        ok = sum(r["status"] == "ok" for r in all_rows)
        return {"results": "export/results.json", "files_ok": ok, "rows": len(all_rows)}


class _Job:
    """Every (variant, format) step; each appends one row, and finished rows are skipped on resume."""

    def __init__(self, ctx: StageContext, family: Any, tokenizers: Any, data: Any, formats: list[str]) -> None:
        from tlc_export.tasks.translation.export import teacher_forced_batch

        self.ctx, self.family, self.tok, self.formats = ctx, family, tokenizers, formats
        self.cfg, self.tcfg = ctx.recipe.export, ctx.recipe.translation
        self.splits = {"dev": list(data.dev), "test": list(data.test)}
        check = self.splits[self.cfg.accuracy_split]
        self.val_sources = [p.source for p in check[: self.cfg.validation_samples]]
        self.tf_batch = teacher_forced_batch(tokenizers, check[:TEACHER_FORCED_SENTENCES], self.tcfg.max_source_length,
                                             self.tcfg.max_target_length)
        self.rows_file = ctx.out_dir / "rows.jsonl"
        root = ctx.run_dir.root
        self.done = {(r["variant"], r["format"]): r for r in read_jsonl(self.rows_file)
                     if r.get("status") == "ok" and r.get("folder") and (root / r["folder"]).is_dir()}
        self.planned: set[tuple[str, str]] = set()
        self._templates: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------------------------------
    def _folder(self, variant: str, fmt: str) -> Path:
        return self.ctx.out_dir / variant / fmt

    def _rel(self, p: Path) -> str:
        return str(p.relative_to(self.ctx.run_dir.root))

    def _template(self, size: str, model: Any) -> Any:
        from tlc_export.tasks.translation.export import export_template

        if size not in self._templates:
            with self.ctx.console.status(f"exporting the {size} encoder/decoder pair"):
                self._templates[size] = export_template(model, self.ctx.out_dir / size / "template", opset=self.cfg.opset)
        return self._templates[size]

    def _translator(self, folder: Path, exact: bool = False) -> Any:
        from tlc_export.tasks.translation.onnx import OrtTranslator

        return OrtTranslator.open(folder, threads=self.ctx.recipe.bench.threads if self.ctx.recipe.bench else None, exact=exact)

    def _agreement(self, model: Any, translator: Any) -> dict[str, Any]:
        from tlc_export.tasks.translation.export import greedy_agreement

        return greedy_agreement(model, translator, self.tok, self.val_sources, max_source_length=self.tcfg.max_source_length,
                                max_length=self.tcfg.decoding.max_length)

    def _score(self, folder: Path) -> dict[str, Any]:
        """BLEU/chrF of the files on dev and test through a plain session; predictions beside them."""
        from tlc_export.tasks.translation.metrics import TranslationPredictions
        from tlc_export.tasks.translation.onnx import translate_onnx

        ort = self._translator(folder)
        preds = {}
        for split, pairs in self.splits.items():
            sources = [p.source for p in pairs]
            hyps = translate_onnx(ort, self.tok, sources, max_source_length=self.tcfg.max_source_length,
                                  max_length=self.tcfg.decoding.max_length, batch_size=self.tcfg.decoding.batch_size)
            preds[split] = TranslationPredictions(sources, [p.target for p in pairs], hyps)
        write_json(folder / "predictions.json", {s: vars(p) for s, p in preds.items()})
        return {**self.family.row_fields(preds), "predictions": self._rel(folder / "predictions.json")}

    def _step(self, variant: str, fmt: str, base: dict[str, Any], fn) -> None:
        self.planned.add((variant, fmt))
        if (variant, fmt) in self.done:
            return
        folder = self._folder(variant, fmt)
        row: dict[str, Any] = {**base, "format": fmt, "folder": self._rel(folder), "file_bytes": None, "status": "ok",
                               "reason": None, "validation": None, "decoding": "greedy"}
        def work() -> dict[str, Any]:  # what succeeded before a failure stays in the row
            with self.ctx.console.status(f"{variant} {fmt}"):
                row.update(fn(folder))
                row["file_bytes"] = _files_bytes(folder)
                return self._score(folder)

        record(attempt(row, work), self.rows_file, self.done, self.ctx.console, reason_chars=300)
        if row["status"] == "ok":
            self.ctx.console.print(f"  {variant} {fmt}: {row['file_bytes'] / 1e6:.2f} MB, dev BLEU {row['dev_bleu']:.2f}, "
                                   f"test BLEU {row['test_bleu']:.2f}")

    # -- variants ------------------------------------------------------------------------------------
    def variant(self, size: str, r: dict[str, Any]) -> None:
        bits = int(r["bits"])
        if bits >= 32:
            fmts = [f for f in FP_FORMATS if f in self.formats]
        else:
            fmts = [f for f, b in CODE_FORMATS.items() if bits in b and f in self.formats]
        for f in fmts:
            self.planned.add((r["variant"], f))
        if not any((r["variant"], f) not in self.done for f in fmts):
            return
        path = artifact_path(self.ctx, r)
        model = load_variant(path)
        template = self._template(size, model)
        base = {"variant": r["variant"], "model": size, "sparsity": _sparsity(r), "bits": bits,
                "source": r["artifact"], "exporter": template.exporter}
        if bits >= 32:
            self._fp(r, model, template, base, fmts)
        else:
            from tlc_export.compress.artifact import load_artifact

            codes = load_artifact(path).quantized
            for f in fmts:
                self._step(r["variant"], f, {**base, "storage_bytes": r.get("storage_bytes"), "codes": "compress"},
                           lambda folder, f=f: self._own_codes(folder, f, model, template, codes))

    def _fp(self, r: dict[str, Any], model: Any, template: Any, base: dict[str, Any], fmts: list[str]) -> None:
        from tlc_export.tasks.translation.export import teacher_forced_check, write_variant

        fp32 = self._folder(r["variant"], "onnx-fp32")
        state = model.state_dict()

        def ensure_fp32() -> Path:
            if not _files_bytes(fp32, missing_ok=True):
                write_variant(template, fp32, state)
            return fp32

        def f32(folder: Path) -> dict[str, Any]:
            ensure_fp32()
            exact = self._translator(folder, exact=True)
            logits = teacher_forced_check(model, exact, self.tf_batch, _tolerance(), str(folder))
            agree = self._agreement(model, exact)
            if agree["mismatched"]:
                from tlc_export.errors import OutputMismatch

                raise ExportMismatchError(str(folder), [OutputMismatch(
                    f"greedy tokens ({len(agree['mismatched'])} of {agree['sentences']} sentences differ from generate)",
                    1.0 - agree["token_agreement"], 0.0)])
            return {"storage_bytes": r.get("storage_bytes"),
                    "validation": {"reference": "torch generate (greedy), the b32 variant", "greedy": agree,
                                   "teacher_forced": logits, "session": "exact"}}

        def int8_dynamic(folder: Path) -> dict[str, Any]:
            from tlc_export.export.ort_quant import quantize_int8_dynamic
            from tlc_export.tasks.translation.export import FILES

            src = ensure_fp32()
            for f in FILES:
                quantize_int8_dynamic(src / f, folder / f)
            ort = self._translator(folder)
            return {"storage_bytes": None, "quantized_from": self._rel(src), "model_of_its_own": True,
                    "validation": {"reference": "torch generate (greedy), the b32 variant (recorded, not enforced: "
                                   "ONNX Runtime's own grid)", "greedy": self._agreement(model, ort),
                                   "teacher_forced": teacher_forced_check(model, ort, self.tf_batch, None, str(folder)),
                                   "session": "plain"}}

        for f in fmts:
            self._step(r["variant"], f, base, f32 if f == "onnx-fp32" else int8_dynamic)

    def _own_codes(self, folder: Path, fmt: str, model: Any, template: Any, codes: dict[str, Any]) -> dict[str, Any]:
        from tlc_export.tasks.translation.export import teacher_forced_check, write_variant

        write_variant(template, folder, model.state_dict(), codes, container="int4" if fmt == "onnx-int4" else "int8")
        exact = self._translator(folder, exact=True)
        logits = teacher_forced_check(model, exact, self.tf_batch, _tolerance(), str(folder))
        agree = self._agreement(model, exact)
        if agree["token_agreement"] < OWN_CODE_MIN_TOKEN_AGREEMENT:
            from tlc_export.errors import OutputMismatch

            raise ExportMismatchError(str(folder), [OutputMismatch(
                "greedy token disagreement with the fake-quant variant", 1.0 - agree["token_agreement"],
                1.0 - OWN_CODE_MIN_TOKEN_AGREEMENT)])
        return {"validation": {"reference": "the fake-quant torch variant: generate (greedy) and teacher-forced logits",
                               "greedy": agree, "teacher_forced": logits, "session": "exact",
                               "min_token_agreement": OWN_CODE_MIN_TOKEN_AGREEMENT}}


def _tolerance() -> float:
    from tlc_export.export.validate import TOLERANCE

    return TOLERANCE["fp32"]


def _files_bytes(folder: Path, missing_ok: bool = False) -> int:
    from tlc_export.tasks.translation.export import FILES

    paths = [folder / f for f in FILES]
    if missing_ok and not all(p.is_file() for p in paths):
        return 0
    return sum(p.stat().st_size for p in paths)


def _table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="export (translation; greedy through ONNX Runtime; dev selects, test reports)")
    for c in ("variant", "format", "MB", "greedy = torch", "max|Δ logit|", "dev BLEU", "test BLEU", "test chrF", "status"):
        t.add_column(c, justify="left" if c in ("variant", "format", "status") else "right")
    for r in rows:
        v = r.get("validation") or {}
        g = v.get("greedy") or {}
        tf = v.get("teacher_forced") or {}
        ci = r.get("test_bleu_ci")
        t.add_row(r["variant"], r["format"], f"{(r.get('file_bytes') or 0) / 1e6:.2f}",
                  f"{g['identical']}/{g['sentences']}" if g else "", f"{tf['max_abs_diff']:.2g}" if tf else "",
                  f"{r['dev_bleu']:.2f}" if r.get("dev_bleu") is not None else "",
                  (f"{r['test_bleu']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")) if r.get("test_bleu") is not None else "",
                  f"{r['test_chrf']:.2f}" if r.get("test_chrf") is not None else "", r["status"])
    return t
