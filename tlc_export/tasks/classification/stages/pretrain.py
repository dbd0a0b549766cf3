"""`pretrain` stage: every size of the grid trains for the same wall-clock budget (paper §2–3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlc_export import atomic, distributed
from tlc_export.errors import StageError
from tlc_export.stages.base import Stage, StageContext

REPLICAS = "replicas"  # pretrain/replicas/seed-<s>/<size>/: the further seeds of pretrain.seeds


class PretrainStage(Stage):
    name = "pretrain"
    distributed = True
    sections = ("models", "pretrain", "data", "tokenizer")
    inputs = ("data",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from tlc_export.pretrain.loop import CURVES_FILE, pretrain_size
        from tlc_export.pretrain.plots import plot_curves

        recipe = ctx.recipe
        seq_len = recipe.data.max_seq_len
        data = load_pretrain_data(ctx.input_dir("data"), seq_len, recipe.data.mlm_probability, recipe.data.fraction)
        val_sample = data.validation_sample(recipe.pretrain).record()

        models: list[dict[str, Any]] = []
        curves: dict[str, list[dict[str, Any]]] = {}
        for size in recipe.models.grid():
            row = pretrain_size(
                size, recipe.pretrain, data, ctx.out_dir / size.name,
                dropout=recipe.models.dropout, console=ctx.console,
            )
            row["checkpoint"] = f"{self.name}/{size.name}/checkpoint"
            row["kept_checkpoints"] = [{**k, "checkpoint": f"{self.name}/{k['checkpoint']}"}
                                       for k in row.get("kept_checkpoints") or []]
            row["curves"] = f"{self.name}/{size.name}/{CURVES_FILE}"
            models.append(row)
            curves[size.name] = atomic.read_jsonl(ctx.out_dir / size.name / CURVES_FILE)

        replicas = []
        for seed in recipe.pretrain.replica_seeds():
            cfg = recipe.pretrain.model_copy(update={"seed": seed, "seeds": None, "keep_checkpoints_at": []})
            folder = f"{REPLICAS}/seed-{seed}"
            rows = []
            for size in recipe.models.grid():
                row = pretrain_size(size, cfg, data, ctx.out_dir / folder / size.name,
                                    dropout=recipe.models.dropout, console=ctx.console)
                row["checkpoint"] = f"{self.name}/{folder}/{size.name}/checkpoint"
                row["curves"] = f"{self.name}/{folder}/{size.name}/{CURVES_FILE}"
                row.pop("kept_checkpoints", None)  # only the first seed's models are finetuned
                rows.append(row)
            replicas.append({"seed": seed, "models": rows})

        outputs: dict[str, Any] = {
            "results": f"{self.name}/results.json",
            "curves_wallclock": f"{self.name}/curves_wallclock.png",
            "curves_steps": f"{self.name}/curves_steps.png",
            "curves_flops": f"{self.name}/curves_flops.png",
            "checkpoints": {r["model"]: r["checkpoint"] for r in models},
        }
        if distributed.is_main():
            budget = recipe.pretrain.time_budget_s
            atomic.write_json(ctx.out_dir / "results.json", {
                "time_budget_s": budget, "seq_len": seq_len, "batch_size": recipe.pretrain.batch_size,
                "world_size": distributed.world_size(),
                "train_tokens": data.train_tokens, "train_rows": len(data.train_rows),
                "data_fraction": data.data_fraction, "train_documents": data.train_documents,
                "validation_sample": val_sample, "models": models,
                **({"seed": recipe.pretrain.seed, "replicas": replicas} if replicas else {}),
            })
            plot_curves(curves, "elapsed_s", ctx.out_dir / "curves_wallclock.png",
                        f"Same {budget:g} s budget: perplexity vs wall-clock")
            plot_curves(curves, "step", ctx.out_dir / "curves_steps.png", "Perplexity vs gradient steps")
            plot_curves(curves, "flops_paper", ctx.out_dir / "curves_flops.png",
                        "Validation loss vs FLOPs (Figure 10)", y="val_loss")
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


def load_pretrain_data(data_dir: Path, seq_len: int, mlm_probability: float, fraction: float = 1.0) -> Any:
    """The data stage's token files, memory-mapped and packed into rows on demand (no copy per rank).

    `fraction` < 1 keeps that fraction of the training documents (`data.fraction`, see
    `tlc_export.data.subsample`); the validation split is always whole.
    """
    from tlc_export.data.mlm import PackedRows
    from tlc_export.data.subsample import training_tokens
    from tlc_export.data.token_files import TOKENS_DIR, TokenSplit, tokenizer_sha256
    from tlc_export.pretrain.loop import PretrainData

    tokenizer = load_mlm_tokenizer(data_dir / "tokenizer")
    sha = tokenizer_sha256(data_dir / "tokenizer")
    bos, eos = int(tokenizer.bos_token_id), int(tokenizer.eos_token_id)
    splits = {s: TokenSplit.open(data_dir / TOKENS_DIR, s, tokenizer_sha=sha) for s in ("train", "val")}
    train_ids, kept_docs = training_tokens(splits["train"], fraction)
    rows = {"train": PackedRows(train_ids, seq_len, bos, eos), "val": PackedRows(splits["val"].ids, seq_len, bos, eos)}
    for s, r in rows.items():
        if len(r) == 0:
            sub = (f" (data.fraction={fraction:g} keeps {kept_docs:,} of {len(splits[s].document_ends):,} documents)"
                   if s == "train" and fraction < 1 else "")
            raise StageError(
                f"{splits[s].folder / (s + '.bin')}: {len(r.ids):,} tokens{sub}, fewer than one sequence of "
                f"data.max_seq_len={seq_len}; add data sources, raise data.fraction or lower data.max_seq_len"
            )
    val = splits["val"]
    return PretrainData(
        rows["train"], rows["val"], tokenizer, mlm_probability,
        val_row_sources=val.source_of_tokens(rows["val"].row_starts(range(len(rows["val"])))),
        source_labels=val.source_labels, data_fraction=fraction,
        train_documents={"kept": kept_docs, "of": len(splits["train"].document_ends)},
    )
