"""`compress` stage: the pruning ladder × quantization bits grid (paper §4.2–4.3, Figure 7).

For each size: iterative magnitude pruning from the finetuned model (levels saved under
`compress/<size>/pruned/`; recovery runs at the size's chosen finetune lr and seed and stops on dev),
then every saved level (dense s00 included) × every bit width (32 = unquantized) is fake-quantized
with the pruning mask re-applied, written as a packed artifact, and scored on dev and test. With
`compress.quantize.tensorrt_int4_block`, every level also gets the TensorRT INT4 variant
(`….b4.sym-g64`: symmetric block codes on weight matrices), a variant like any other. Each variant's
per-example dev/test predictions are stored beside its artifact (`<variant>.predictions.npz`), and its
row carries intervals, the majority baseline and the learned-task flag (`tlc_export.scoring`). Every
variant row is also kept beside its artifact, so an interrupted run resumes variant by variant. Plus
the compression-error analysis of each dense model (Figure 9).

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
from tlc_export.compress.variants import quant_fields, variant_name
from tlc_export.errors import StageError
from tlc_export.scoring import REPORT_SPLIT, SELECTION_SPLIT
from tlc_export.stages.base import Stage, StageContext
from tlc_export.tasks.classification.stages.finetune import pick_device

RESULTS = "results.json"
CHECKPOINTS = "checkpoints.json"


def tensorrt_grid_tag(block: int) -> str:
    return f"sym-g{block}"


def extra_tensorrt_variant(qcfg: Any) -> int | None:
    """Block size of the extra TensorRT INT4 variant, or None when there is none to make (not asked
    for, or the recipe's own 4-bit grid already is that grid)."""
    block = qcfg.tensorrt_int4_block
    if block is None:
        return None
    main_is_it = 4 in qcfg.bits and qcfg.granularity == "block" and qcfg.symmetric and qcfg.group_size == block
    return None if main_is_it else block


class CompressStage(Stage):
    name = "compress"
    sections = ("compress", "finetune")
    inputs = ("finetune",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        import torch

        from tlc_export.compress.analysis import compression_errors, plot_errors
        recipe = ctx.recipe
        if recipe.compress is None or recipe.finetune is None:
            raise StageError("recipe needs `finetune` and `compress` sections for the compress stage")
        if recipe.finetune.threads is not None:
            torch.set_num_threads(recipe.finetune.threads)
        task = ctx.family.read(recipe)
        rows: list[dict[str, Any]] = []
        errors: dict[str, list[dict[str, Any]]] = {}
        ladders: dict[str, list[dict[str, Any]]] = {}
        for size in recipe.models.grid():
            size_rows, ladder, dense = self._one(ctx, size.name, task)
            rows.extend(size_rows)
            ladders[size.name] = ladder
            a = recipe.compress.analysis
            errors[size.name] = compression_errors(dense, bits=a.bits, sparsity=a.sparsity)
            ctx.console.print(results_table(size.name, size_rows))
        atomic.write_json(ctx.out_dir / RESULTS, rows)
        atomic.write_json(ctx.out_dir / "ladder.json", ladders)
        extra: list[dict[str, Any]] = []
        for ft in _checkpoint_rows(ctx):
            key_rows, _, _ = self._one(ctx, ft["model"], task, prune=False)
            for r in key_rows:
                r.update(size=ft.get("size"), pretrained_from=ft.get("pretrained_from"))
            extra.extend(key_rows)
            ctx.console.print(results_table(ft["model"], key_rows))
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
        from tlc_export.compress.quantize import QuantConfig
        from tlc_export.finetune import evaluate_accuracy, load_tokenizer
        recipe = ctx.recipe
        ccfg, fcfg = recipe.compress, recipe.finetune
        assert ccfg is not None and fcfg is not None
        ft_dir = ctx.input_dir("finetune") / size
        model_dir = ft_dir / "model"
        if not (model_dir / "config.json").exists():
            raise StageError(f"{model_dir}: finetuned model missing; run the finetune stage for {size} first")
        tokenizer = load_tokenizer(model_dir)
        dense = ctx.family.build_model(recipe, checkpoint=model_dir)
        device = pick_device()
        chosen = _finetune_row(ft_dir / RESULTS)
        base = chosen.get("dev_accuracy")
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
            # Recovery sees train and dev only (dev decides when it stops).
            selection = _TrainDev(task.train, task.dev)
            ladder = prune_ladder(
                copy.deepcopy(dense).to(device), tokenizer, selection, ccfg.prune, fcfg, out / "pruned",
                base_dev_acc=base, console=ctx.console, name=size,
                finetune_lr=chosen.get("lr"), seed=chosen.get("seed"),
            )
        for s in ccfg.prune.sparsity if prune else []:
            rec = next(r for r in ladder if abs(r.sparsity - s) < 1e-9)
            m, masks = load_level(out / "pruned" / rec.model_dir)
            levels.append((s, f"{self.name}/{size}/pruned/{rec.model_dir}", m, masks))
        grids: list[tuple[int, Any, str | None]] = [(32, None, None)]
        grids += [(b, QuantConfig.from_recipe(ccfg.quantize, b), None) for b in ccfg.quantize.bits if b != 32]
        block = extra_tensorrt_variant(ccfg.quantize)
        if block is not None and prune:  # an earlier checkpoint's variants are for Figure 8 only: the recipe's own grid
            grids.append((4, QuantConfig.tensorrt_int4(ccfg.quantize, block), tensorrt_grid_tag(block)))
        params = sum(p.numel() for p in dense.parameters())
        rows = []
        for s, level_dir, level_model, masks in levels:
            for bits, qcfg, tag in grids:
                variant = variant_name(size, s, bits, tag)
                row = self._variant(ctx, variant, level_model, masks, bits, qcfg, tag, tokenizer, task, device)
                row.update(
                    variant=variant, model=size, params=params, sparsity=s,
                    sparsity_reached=mask_sparsity(masks) if masks else 0.0,
                    pruned_model_dir=level_dir,
                )
                rows.append(row)
        return rows, [r.to_dict() for r in ladder], dense

    def _variant(self, ctx: StageContext, variant: str, level_model: Any, masks: dict | None, bits: int,
                 qcfg: Any, tag: str | None, tokenizer: Any, task: Any, device: str) -> dict[str, Any]:
        from tlc_export.compress.artifact import save_artifact
        from tlc_export.compress.quantize import quantize_
        from tlc_export.predictions import predictions_path_for, save_predictions
        ccfg, fcfg = ctx.recipe.compress, ctx.recipe.finetune
        assert ccfg is not None and fcfg is not None
        size = variant.split(".")[0]
        vdir = ctx.out_dir / size / "variants"
        path, row_file = vdir / f"{variant}.safetensors", vdir / f"{variant}.json"
        pred_path = predictions_path_for(path)
        if path.exists() and row_file.exists() and pred_path.exists():
            return json.loads(row_file.read_text())
        m = copy.deepcopy(level_model).to("cpu")
        quantized = None
        if qcfg is not None:
            quantized = quantize_(m, qcfg, masks=masks)
        report = save_artifact(
            path, m, quantized, masks,
            meta={"variant": variant, "recipe_hash": ctx.recipe.section_hash("compress", "finetune")},
        )
        m.to(device)
        family = ctx.family
        preds = family.predict(m, tokenizer, {"dev": task.dev, "test": task.test}, ctx.recipe)
        save_predictions(pred_path, preds)
        rel = f"{self.name}/{size}/variants"
        row = {
            "variant": variant,
            **quant_fields(bits, qcfg),
            "grid": tag,
            "tensorrt_int4": bool(qcfg is not None and bits == 4 and qcfg.symmetric and qcfg.granularity == "block"
                                  and qcfg.group_size in (64, 128)),
            "artifact": f"{rel}/{path.name}",
            **report.to_dict(),
            **family.row_fields(preds),
            "predictions": f"{rel}/{pred_path.name}",
        }
        atomic.write_json(row_file, row)
        flag = "" if row["learned_task"] else "  [red](not above majority)[/]"
        ctx.console.print(
            f"  {variant}: {row['storage_bytes'] / 1e6:.2f} MB, dev {row['dev_accuracy']:.4f}, test {row['test_accuracy']:.4f}{flag}"
        )
        return row


class _TrainDev:
    """The task as selection code may see it: train and dev, no test."""

    def __init__(self, train: list[Any], dev: list[Any]) -> None:
        self.train, self.dev = train, dev


def _finetune_row(path: Path) -> dict[str, Any]:
    """The size's finetune result row (chosen lr, seed, dev accuracy); {} when absent."""
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def _checkpoint_rows(ctx: StageContext) -> list[dict[str, Any]]:
    """The finetune stage's models from earlier pretraining checkpoints (`finetune.from: every-kept`)."""
    path = ctx.input_dir("finetune") / RESULTS
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return [r for r in data.get("checkpoints") or [] if isinstance(r, dict) and r.get("model")] if isinstance(data, dict) else []


def results_table(size: str, rows: list[dict[str, Any]]) -> Table:
    """One line per variant: artifact MB, test accuracy with its 95 % interval, dev beside it, and
    whether it is significantly above the majority class."""
    table = Table(title=f"compress {size} ({REPORT_SPLIT} reports, {SELECTION_SPLIT} selected)")
    for col in ("variant", "MB", f"{REPORT_SPLIT} acc [95 %]", f"{SELECTION_SPLIT} acc", "> majority"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    order = sorted(rows, key=lambda r: (r["sparsity"], -r["bits"], r.get("grid") or ""))
    for r in order:
        ci = r.get(f"{REPORT_SPLIT}_accuracy_ci") or [float("nan")] * 2
        table.add_row(
            r["variant"], f"{r['storage_bytes'] / 1e6:.2f}",
            f"{100 * r[f'{REPORT_SPLIT}_accuracy']:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]",
            f"{100 * r[f'{SELECTION_SPLIT}_accuracy']:.1f}",
            "yes" if r.get("learned_task") else "[red]no[/]",
        )
    return table
