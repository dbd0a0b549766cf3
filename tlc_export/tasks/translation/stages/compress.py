"""`compress` stage of the translation family: the pruning ladder × quantization bits grid (paper §4) on
every trained translation size.

For each size of `translation/results.json`: iterative magnitude pruning from its checkpoint
(`compress.prune`; position tables and layer norms never pruned, the tied table pruned once), each
level recovered on the training pairs until greedy dev BLEU on the fixed dev sample is ≥
`recovery_target` × the unpruned model's (or the epoch / step cap), levels saved under
`compress/<size>/pruned/sXX/` and resumed level by level. Then every level (dense s00 included) × every
bit width of `compress.quantize.bits` (+ 32 = unquantized) is fake-quantized with the project's quantizer
(mask re-applied), written as a packed artifact without the sinusoidal position tables (recomputed at
load), reloaded from that file (`load_translation_variant`) and scored on dev and test with the recipe's
decoding. Each variant's row and predictions sit beside its artifact, so an interrupted stage resumes
variant by variant. No TensorRT INT4 variant (`compress.quantize.tensorrt_int4_block` is classification's).

```
compress/<size>/pruned/sXX/                  MarianMTModel + masks.safetensors + prune.json (the level record)
compress/<size>/pruned/base.json             the unpruned model's greedy dev-sample BLEU (recovery's base)
compress/<size>/variants/<variant>.safetensors           the packed artifact
compress/<size>/variants/<variant>.json                  its row
compress/<size>/variants/<variant>.predictions.json      {dev|test: {sources, references, hypotheses}}
compress/ladder.json                         {size: [level record]}
compress/results.json                        [variant row]
```
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

RESULTS = "results.json"
LADDER = "ladder.json"
BASE = "base.json"
PREDICTIONS_SUFFIX = ".predictions.json"


class TranslationCompressStage(Stage):
    name = "compress"
    sections = ("compress", "translation")
    inputs = ("translation",)
    ignores = {"compress": frozenset({"analysis"})}  # the error analysis (Figure 9) is classification's

    def run(self, ctx: StageContext) -> dict[str, Any]:
        import torch

        from tlc_export.pretrain.step import pick_device
        from tlc_export.tasks.translation.tokenizer import TranslationTokenizers
        from tlc_export.tasks.translation.train import dev_sample

        recipe = ctx.recipe
        cfg, ccfg = recipe.translation, recipe.compress
        if cfg is None or ccfg is None:
            raise StageError("recipe needs `translation` and `compress` sections for the translation compress stage")
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)
        src = ctx.input_dir("translation")
        trained = _trained_rows(src / RESULTS)
        data = ctx.family.read(recipe)
        tokenizers = TranslationTokenizers.load(src / "tokenizer")
        device = pick_device(cfg.train)  # type: ignore[arg-type]  # reads .device, which the section shares
        dev = dev_sample(data.dev, tokenizers, cfg)
        encoded: list[Any] = []

        def train_pairs() -> Any:  # encoded once, and only if some level still needs recovery
            from tlc_export.tasks.translation.batching import encode_pairs

            if not encoded:
                encoded.append(encode_pairs(tokenizers, data.train, cfg.max_source_length, cfg.max_target_length))
            return encoded[0]

        rows: list[dict[str, Any]] = []
        ladders: dict[str, list[dict[str, Any]]] = {}
        for trow in trained:
            size_rows, ladder = self._size(ctx, trow, tokenizers, data, dev, train_pairs, device)
            rows.extend(size_rows)
            ladders[trow["model"]] = ladder
            ctx.console.print(results_table(trow["model"], size_rows))
        atomic.write_json(ctx.out_dir / RESULTS, rows)
        atomic.write_json(ctx.out_dir / LADDER, ladders)
        return {"results": f"{self.name}/{RESULTS}", "ladder": f"{self.name}/{LADDER}", "variants": len(rows)}

    def _size(self, ctx: StageContext, trow: dict[str, Any], tokenizers: Any, data: Any, dev: Any,
              train_pairs: Any, device: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        from tlc_export.compress.prune import MASKS_FILE, load_masks
        from tlc_export.tasks.translation.compress import (
            learned_parameters,
            load_translation_level_model,
            translation_ladder,
        )

        recipe = ctx.recipe
        cfg, ccfg = recipe.translation, recipe.compress
        assert cfg is not None and ccfg is not None
        size = trow["model"]
        checkpoint = ctx.input_dir("translation") / size / "checkpoint"
        if not (checkpoint / "config.json").is_file():
            raise StageError(f"{checkpoint}: the translation checkpoint of {size} is missing; rerun the translation stage")
        dense = load_translation_level_model(checkpoint)
        out = ctx.out_dir / size
        base = self._base_bleu(out / "pruned" / BASE, dense, tokenizers, dev, trow, device, cfg)
        ctx.console.print(f"[bold]compress {size}[/]: pruning ladder from greedy dev-sample BLEU {base:.2f}")
        ladder = translation_ladder(
            copy.deepcopy(dense).to(device), ccfg.prune, tokenizers=tokenizers, train=train_pairs, dev=dev,
            translation=cfg, out_dir=out / "pruned", base_dev_bleu=base, console=ctx.console, name=size,
        )
        levels: list[tuple[float, str, Path | None, float]] = [(0.0, trow["checkpoint"], None, 0.0)]
        for s in ccfg.prune.sparsity:
            rec = next(r for r in ladder if abs(r["sparsity"] - s) < 1e-9)
            levels.append((s, f"{self.name}/{size}/pruned/{rec['model_dir']}", out / "pruned" / rec["model_dir"],
                           rec["sparsity_reached"]))
        params = learned_parameters(dense)
        rows = []
        for s, level_dir, folder, reached in levels:
            loaded: list[tuple[Any, dict | None]] = []

            def level(folder: Path | None = folder, loaded: list = loaded) -> tuple[Any, dict | None]:
                # A level's model is loaded only when one of its variants is still to be made.
                if not loaded:
                    loaded.append((dense, None) if folder is None else
                                  (load_translation_level_model(folder), load_masks(folder / MASKS_FILE)))
                return loaded[0]

            for bits in [32, *(b for b in ccfg.quantize.bits if b != 32)]:
                row = self._variant(ctx, size, s, bits, level, tokenizers, data, trow, device)
                row.update(model=size, params=params, sparsity=s, sparsity_reached=reached, pruned_model_dir=level_dir)
                rows.append(row)
        return rows, ladder

    @staticmethod
    def _base_bleu(path: Path, dense: Any, tokenizers: Any, dev: Any, trow: dict[str, Any], device: Any,
                   cfg: Any) -> float:
        """The unpruned model's greedy BLEU on the fixed dev sample: the training row's last curve point
        when it was measured on this kind of device (the same sample, decoding and weights), else decoded."""
        from tlc_export.tasks.translation.compress import dev_sample_bleu

        if path.is_file():
            return float(json.loads(path.read_text())["dev_bleu"])
        same_device = str(trow.get("device", "")).split(":")[0] == device.type
        if trow.get("final_dev_bleu") is not None and same_device:
            bleu, source = float(trow["final_dev_bleu"]), "translation row final_dev_bleu (last curve point)"
        else:
            bleu, source = dev_sample_bleu(dense.to(device), tokenizers, dev, cfg), "decoded here"
            dense.to("cpu")
        atomic.write_json(path, {"dev_bleu": bleu, "source": source, "decoding": "greedy", "dev_sentences": len(dev.sources)})
        return bleu

    def _variant(self, ctx: StageContext, size: str, sparsity: float, bits: int, level: Any,
                 tokenizers: Any, data: Any, trow: dict[str, Any], device: Any) -> dict[str, Any]:
        from tlc_export.compress.quantize import QuantConfig
        from tlc_export.compress.variants import quant_fields, variant_name
        from tlc_export.tasks.translation.compress import (
            load_translation_variant,
            quantize_translation_,
            save_translation_artifact,
        )

        recipe = ctx.recipe
        ccfg, cfg = recipe.compress, recipe.translation
        assert ccfg is not None and cfg is not None
        variant = variant_name(size, sparsity, bits)
        vdir = ctx.out_dir / size / "variants"
        path, row_file = vdir / f"{variant}.safetensors", vdir / f"{variant}.json"
        pred_path = vdir / f"{variant}{PREDICTIONS_SUFFIX}"
        if path.exists() and row_file.exists() and pred_path.exists():
            return json.loads(row_file.read_text())
        qcfg = QuantConfig.from_recipe(ccfg.quantize, bits) if bits != 32 else None
        level_model, masks = level()
        m = copy.deepcopy(level_model).to("cpu")
        quantized = quantize_translation_(m, qcfg, masks=masks) if qcfg is not None else None
        report = save_translation_artifact(
            path, m, quantized, masks,
            meta={"variant": variant, "recipe_hash": recipe.section_hash("compress", "translation")},
        )
        del m
        family = ctx.family
        splits = {"dev": data.dev, "test": data.test}
        reused = _trained_predictions(ctx, trow, splits) if sparsity == 0 and bits == 32 else None
        if reused is not None:
            # s00.b32 is the translation checkpoint itself: its predictions and scores are the training row's.
            preds, fields = reused
        else:
            model = load_translation_variant(path).to(device)  # score exactly what the artifact stores
            preds = family.predict(model, tokenizers, splits, recipe)
            fields = family.row_fields(preds)
        atomic.write_json(pred_path, {s: vars(p) for s, p in preds.items()})
        rel = f"{self.name}/{size}/variants"
        row = {
            "variant": variant,
            **quant_fields(bits, qcfg),
            "grid": None,
            "tensorrt_int4": False,
            "artifact": f"{rel}/{path.name}",
            "position_tables": "recomputed at load (not stored)",
            **report.to_dict(),
            **fields,
            "decoding": cfg.decoding.strategy,
            "predictions": f"{rel}/{pred_path.name}",
        }
        atomic.write_json(row_file, row)
        ctx.console.print(f"  {variant}: {row['storage_bytes'] / 1e6:.2f} MB, dev BLEU {row['dev_bleu']:.2f}, "
                          f"test BLEU {row['test_bleu']:.2f} {_ci(row, 'test')}")
        return row


def _trained_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise StageError(f"{path}: missing; run the translation stage first")
    rows = json.loads(path.read_text()).get("models") or []
    if not rows:
        raise StageError(f"{path}: `models` is empty; the translation stage trained no size")
    return rows


def _trained_predictions(ctx: StageContext, trow: dict[str, Any], splits: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The translation stage's predictions and metric fields of this size, when they are for the same
    sentences and decoding (else None: decode again)."""
    from tlc_export.tasks.translation.metrics import TranslationPredictions

    cfg = ctx.recipe.translation
    assert cfg is not None
    path = ctx.input_dir("translation") / trow["model"] / "predictions.json"
    if trow.get("decoding") != cfg.decoding.strategy or not path.is_file():
        return None
    saved = json.loads(path.read_text())
    preds = {}
    for split, pairs in splits.items():
        p = saved.get(split) or {}
        if p.get("sources") != [x.source for x in pairs] or p.get("references") != [x.target for x in pairs]:
            return None
        preds[split] = TranslationPredictions(p["sources"], p["references"], p["hypotheses"])
    keys = [f"{s}_{k}" for s in splits for k in ("bleu", "bleu_ci", "chrf", "chrf_ci", "n")]
    keys += ["bleu_signature", "chrf_signature", "interval_method", "copy_baseline_bleu", "learned_task", "above_copy_p"]
    if any(k not in trow for k in keys):
        return None  # a training row from before a field existed: score again
    return preds, {k: trow[k] for k in keys}


def _ci(row: dict[str, Any], split: str) -> str:
    ci = row.get(f"{split}_bleu_ci")
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def results_table(size: str, rows: list[dict[str, Any]]) -> Table:
    """One line per variant: artifact MB, test BLEU with its 95 % interval, dev BLEU beside it."""
    table = Table(title=f"compress {size} (test reports, dev selects; sacrebleu bootstrap 95 %)")
    for col in ("variant", "MB", "test BLEU [95 %]", "dev BLEU", "test chrF"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in sorted(rows, key=lambda r: (r["sparsity"], -r["bits"])):
        table.add_row(r["variant"], f"{r['storage_bytes'] / 1e6:.2f}", f"{r['test_bleu']:.2f} {_ci(r, 'test')}",
                      f"{r['dev_bleu']:.2f}", f"{r['test_chrf']:.2f}")
    return table
