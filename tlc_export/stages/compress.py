"""`compress` stage: the pruning ladder × quantization bits grid (paper §4.2–4.3, Figure 7).

For each size: iterative magnitude pruning from the finetuned model (levels saved under
`compress/<size>/pruned/`), then every saved level (dense s00 included) × every bit width (32 =
unquantized) is fake-quantized with the pruning mask re-applied, written as a packed artifact, and
scored on dev and test. Every variant row is also kept beside its artifact, so an interrupted run
resumes variant by variant. Plus the compression-error analysis of each dense model (Figure 9).

Under `finetune.from: every-kept`, each model finetuned from an earlier pretraining checkpoint
(`<size>@<tag>`, the paper's Figure 8) is quantized at every bit width, dense only (no pruning
ladder: the figure is about quantization); its rows go to `compress/checkpoints.json`, apart from
the size's own variants in `compress/results.json`, so export, bench and the answers see only
those.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from tlc_export import atomic
from tlc_export.errors import StageError
from tlc_export.stages.base import Stage, StageContext
from tlc_export.stages.finetune import pick_device

RESULTS = "results.json"
CHECKPOINTS = "checkpoints.json"


def variant_name(size: str, sparsity: float, bits: int) -> str:
    from tlc_export.compress.prune import level_name

    return f"{size}.{level_name(sparsity)}.b{bits}"


class CompressStage(Stage):
    name = "compress"
    sections = ("compress", "finetune")
    inputs = ("finetune",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        import torch

        from tlc_export.compress.analysis import compression_errors, plot_errors
        from tlc_export.data import load_task

        recipe = ctx.recipe
        if recipe.compress is None or recipe.finetune is None:
            raise StageError("recipe needs `finetune` and `compress` sections for the compress stage")
        if recipe.finetune.threads is not None:
            torch.set_num_threads(recipe.finetune.threads)
        task = load_task(recipe.finetune.task, recipe)
        rows: list[dict[str, Any]] = []
        errors: dict[str, list[dict[str, Any]]] = {}
        ladders: dict[str, list[dict[str, Any]]] = {}
        for size in recipe.models.grid():
            size_rows, ladder, dense = self._one(ctx, size.name, task)
            rows.extend(size_rows)
            ladders[size.name] = ladder
            a = recipe.compress.analysis
            errors[size.name] = compression_errors(dense, bits=a.bits, sparsity=a.sparsity)
            ctx.console.print(results_table(size.name, size_rows, recipe.compress.eval_split))
        atomic.write_json(ctx.out_dir / RESULTS, rows)
        atomic.write_json(ctx.out_dir / "ladder.json", ladders)
        extra: list[dict[str, Any]] = []
        for ft in _checkpoint_rows(ctx):
            key_rows, _, _ = self._one(ctx, ft["model"], task, prune=False)
            for r in key_rows:
                r.update(size=ft.get("size"), pretrained_from=ft.get("pretrained_from"))
            extra.extend(key_rows)
            ctx.console.print(results_table(ft["model"], key_rows, recipe.compress.eval_split))
        if extra or (ctx.out_dir / CHECKPOINTS).exists():
            atomic.write_json(ctx.out_dir / CHECKPOINTS, extra)
        table = plot_errors(errors, ctx.out_dir / "error_analysis.png")
        atomic.write_json(ctx.out_dir / "error_analysis.json", table)
        return {
            "results": f"{self.name}/{RESULTS}",
            "error_analysis": f"{self.name}/error_analysis.json",
            "error_plot": f"{self.name}/error_analysis.png",
            "variants": len(rows),
            **({"checkpoints": f"{self.name}/{CHECKPOINTS}", "checkpoint_variants": len(extra)} if extra else {}),
        }

    def _one(self, ctx: StageContext, size: str, task: Any,
             prune: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
        from tlc_export.compress.masks import mask_sparsity
        from tlc_export.compress.prune import load_level, prune_ladder
        from tlc_export.finetune import evaluate_accuracy, load_classifier, load_tokenizer

        recipe = ctx.recipe
        ccfg, fcfg = recipe.compress, recipe.finetune
        assert ccfg is not None and fcfg is not None
        ft_dir = ctx.input_dir("finetune") / size
        model_dir = ft_dir / "model"
        if not (model_dir / "config.json").exists():
            raise StageError(f"{model_dir}: finetuned model missing; run the finetune stage for {size} first")
        tokenizer = load_tokenizer(model_dir)
        dense = load_classifier(model_dir)
        device = pick_device()
        base = _finetune_dev_accuracy(ft_dir / RESULTS)
        if base is None:
            base = evaluate_accuracy(dense.to(device), tokenizer, task.dev, fcfg.max_length)
            dense.to("cpu")

        out = ctx.out_dir / size
        levels: list[tuple[float, str, Any, dict | None]] = [(0.0, f"finetune/{size}/model", dense, None)]
        if not prune:
            ctx.console.print(f"[bold]compress {size}[/]: quantization only (an earlier pretraining checkpoint)")
            ladder = []
        else:
            ctx.console.print(f"[bold]compress {size}[/]: pruning ladder from dev {base:.4f}")
            ladder = prune_ladder(
                copy.deepcopy(dense).to(device), tokenizer, task, ccfg.prune, fcfg, out / "pruned",
                base_dev_acc=base, console=ctx.console, name=size,
            )
        for s in ccfg.prune.sparsity if prune else []:
            rec = next(r for r in ladder if abs(r.sparsity - s) < 1e-9)
            m, masks = load_level(out / "pruned" / rec.model_dir)
            levels.append((s, f"{self.name}/{size}/pruned/{rec.model_dir}", m, masks))
        bits_list = [32] + [b for b in ccfg.quantize.bits if b != 32]
        params = sum(p.numel() for p in dense.parameters())
        rows = []
        for s, level_dir, level_model, masks in levels:
            for bits in bits_list:
                variant = variant_name(size, s, bits)
                row = self._variant(ctx, variant, level_model, masks, bits, tokenizer, task, device)
                row.update(
                    variant=variant, model=size, params=params, sparsity=s,
                    sparsity_reached=mask_sparsity(masks) if masks else 0.0,
                    pruned_model_dir=level_dir,
                )
                rows.append(row)
        return rows, [r.to_dict() for r in ladder], dense

    def _variant(self, ctx: StageContext, variant: str, level_model: Any, masks: dict | None,
                 bits: int, tokenizer: Any, task: Any, device: str) -> dict[str, Any]:
        from tlc_export.compress.artifact import save_artifact
        from tlc_export.compress.quantize import QuantConfig, quantize_
        from tlc_export.finetune import evaluate_accuracy

        ccfg, fcfg = ctx.recipe.compress, ctx.recipe.finetune
        assert ccfg is not None and fcfg is not None
        size = variant.split(".")[0]
        vdir = ctx.out_dir / size / "variants"
        path, row_file = vdir / f"{variant}.safetensors", vdir / f"{variant}.json"
        if path.exists() and row_file.exists():
            return json.loads(row_file.read_text())
        m = copy.deepcopy(level_model).to("cpu")
        quantized = None
        if bits != 32:
            quantized = quantize_(m, QuantConfig.from_recipe(ccfg.quantize, bits), masks=masks)
        report = save_artifact(
            path, m, quantized, masks,
            meta={"variant": variant, "recipe_hash": ctx.recipe.section_hash("compress", "finetune")},
        )
        m.to(device)
        row = {
            "variant": variant,
            "bits": bits,
            "granularity": ccfg.quantize.granularity if bits != 32 else None,
            "symmetric": ccfg.quantize.symmetric if bits != 32 else None,
            "artifact": f"{self.name}/{size}/variants/{path.name}",
            **report.to_dict(),
            "dev_accuracy": evaluate_accuracy(m, tokenizer, task.dev, fcfg.max_length),
            "test_accuracy": evaluate_accuracy(m, tokenizer, task.test, fcfg.max_length),
        }
        atomic.write_json(row_file, row)
        ctx.console.print(
            f"  {variant}: {row['storage_bytes'] / 1e6:.2f} MB, dev {row['dev_accuracy']:.4f}, test {row['test_accuracy']:.4f}"
        )
        return row


def _finetune_dev_accuracy(path: Path) -> float | None:
    if not path.exists():
        return None
    return float(json.loads(path.read_text())["dev_accuracy"])


def _checkpoint_rows(ctx: StageContext) -> list[dict[str, Any]]:
    """The finetune stage's models from earlier pretraining checkpoints (`finetune.from: every-kept`)."""
    path = ctx.input_dir("finetune") / RESULTS
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return [r for r in data.get("checkpoints") or [] if isinstance(r, dict) and r.get("model")] if isinstance(data, dict) else []


def results_table(size: str, rows: list[dict[str, Any]], split: str = "dev") -> Table:
    """Accuracy by sparsity (rows) and bits (columns), with the artifact size."""
    bits = sorted({r["bits"] for r in rows}, reverse=True)
    levels = sorted({r["sparsity"] for r in rows})
    by = {(r["sparsity"], r["bits"]): r for r in rows}
    table = Table(title=f"compress {size}: {split} accuracy (artifact MB)")
    table.add_column("sparsity")
    for b in bits:
        table.add_column("fp32" if b == 32 else f"{b}-bit", justify="right")
    for s in levels:
        cells = []
        for b in bits:
            r = by.get((s, b))
            cells.append("" if r is None else f"{r[f'{split}_accuracy']:.4f} ({r['storage_bytes'] / 1e6:.2f})")
        table.add_row(f"{round(s * 100)} %", *cells)
    return table
