"""`pretrain` stage: every size of the grid trains for the same wall-clock budget (paper §2–3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlc_export import atomic, distributed
from tlc_export.errors import StageError
from tlc_export.stages.base import Stage, StageContext


class PretrainStage(Stage):
    name = "pretrain"
    sections = ("models", "pretrain", "data", "tokenizer")
    inputs = ("data",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from tlc_export.data.mlm import pack_sequences
        from tlc_export.pretrain.loop import CURVES_FILE, PretrainData, pretrain_size
        from tlc_export.pretrain.plots import plot_curves

        recipe = ctx.recipe
        data_dir = ctx.input_dir("data")
        tokenizer = load_mlm_tokenizer(data_dir / "tokenizer")
        seq_len = recipe.data.max_seq_len
        rows = {
            split: pack_sequences(
                _load_ids(data_dir / f"{split}_ids.npy"), seq_len,
                int(tokenizer.bos_token_id), int(tokenizer.eos_token_id),
            )
            for split in ("train", "val")
        }
        if len(rows["train"]) == 0:
            raise StageError(
                f"{data_dir / 'train_ids.npy'}: fewer tokens than one sequence of data.max_seq_len={seq_len}; "
                "add data sources or lower data.max_seq_len"
            )
        data = PretrainData(rows["train"], rows["val"], tokenizer, recipe.data.mlm_probability)

        models: list[dict[str, Any]] = []
        curves: dict[str, list[dict[str, Any]]] = {}
        for size in recipe.models.grid():
            row = pretrain_size(
                size, recipe.pretrain, data, ctx.out_dir / size.name,
                dropout=recipe.models.dropout, console=ctx.console,
            )
            row["checkpoint"] = f"{self.name}/{size.name}/checkpoint"
            row["curves"] = f"{self.name}/{size.name}/{CURVES_FILE}"
            models.append(row)
            curves[size.name] = atomic.read_jsonl(ctx.out_dir / size.name / CURVES_FILE)

        outputs: dict[str, Any] = {
            "results": f"{self.name}/results.json",
            "curves_wallclock": f"{self.name}/curves_wallclock.png",
            "curves_steps": f"{self.name}/curves_steps.png",
            "checkpoints": {r["model"]: r["checkpoint"] for r in models},
        }
        if distributed.is_main():
            budget = recipe.pretrain.time_budget_s
            atomic.write_json(ctx.out_dir / "results.json", {
                "time_budget_s": budget, "seq_len": seq_len, "batch_size": recipe.pretrain.batch_size,
                "world_size": distributed.world_size(), "models": models,
            })
            plot_curves(curves, "elapsed_s", ctx.out_dir / "curves_wallclock.png",
                        f"Same {budget:g} s budget: perplexity vs wall-clock")
            plot_curves(curves, "step", ctx.out_dir / "curves_steps.png", "Perplexity vs gradient steps")
        return outputs


def load_mlm_tokenizer(path: Path) -> Any:
    """The data stage's tokenizer, checked for the special tokens masked-LM training needs."""
    from transformers import AutoTokenizer

    if not (path / "tokenizer_config.json").exists() and not (path / "tokenizer.json").exists():
        raise StageError(f"{path}: no tokenizer found; run the data stage first (`tlc data <recipe>`)")
    tok = AutoTokenizer.from_pretrained(str(path))
    missing = [t for t in ("bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id") if getattr(tok, t) is None]
    if missing:
        raise StageError(
            f"{path}: the tokenizer lacks {', '.join(m[:-3] for m in missing)}; "
            "retrain it with the data stage (it defines <s>, <pad>, </s>, <unk>, <mask>)"
        )
    return tok


def _load_ids(path: Path) -> np.ndarray:
    if not path.exists():
        raise StageError(f"{path}: missing; run the data stage first (`tlc data <recipe>`)")
    try:
        ids = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: not a readable .npy token array ({exc}); rerun the data stage with --force") from exc
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise StageError(f"{path}: expected a flat integer token array, got {ids.dtype} of shape {ids.shape}")
    return np.asarray(ids)
