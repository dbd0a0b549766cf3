"""`finetune` stage: every pretrained size becomes a classifier on the task; the best dev checkpoint is kept."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from tlc_export import atomic
from tlc_export.errors import StageError
from tlc_export.stages.base import Stage, StageContext

RESULTS = "results.json"


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class FinetuneStage(Stage):
    name = "finetune"
    sections = ("finetune",)
    inputs = ("pretrain",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        import torch

        from tlc_export.data import load_task

        cfg = ctx.recipe.finetune
        if cfg is None:
            raise StageError("recipe has no `finetune` section; add one to run this stage")
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        task = load_task(cfg.task, ctx.recipe)
        counts = {"train": len(task.train), "dev": len(task.dev), "test": len(task.test)}
        ctx.console.print(f"[bold]finetune[/]: task {cfg.task.kind} {counts}, {task.num_labels} labels")
        targets, match = pretrained_starts(ctx)
        done = [self._one(ctx, t, task) for t in targets]
        rows = [r for r, t in zip(done, targets, strict=True) if t.primary]
        extra = [r for r, t in zip(done, targets, strict=True) if not t.primary]
        atomic.write_json(ctx.out_dir / RESULTS, {
            "task": cfg.task.kind, "examples": counts, "label_names": task.label_names, "from": cfg.start_from,
            "models": rows, "checkpoints": extra, "matched_perplexity": match.record() if match else None,
        })
        ctx.console.print(results_table(done))
        return {
            "results": f"{self.name}/{RESULTS}",
            "models": {r["model"]: r["model_dir"] for r in rows},
            "dev_accuracy": {r["model"]: r["dev_accuracy"] for r in rows},
        }

    def _one(self, ctx: StageContext, target: Any, task: Any) -> dict[str, Any]:
        import torch

        from tlc_export.finetune import (
            TrainSettings,
            evaluate_accuracy,
            finetune_,
            load_classifier,
            load_tokenizer,
            save_classifier,
        )

        cfg = ctx.recipe.finetune
        assert cfg is not None
        size = target.key  # the size's name, or `<size>@<tag>` for an earlier checkpoint (every-kept)
        out = ctx.out_dir / size
        done = out / RESULTS
        if done.exists() and (out / "model" / "config.json").exists():
            row = json.loads(done.read_text())
            ctx.console.print(f"  {size}: already finetuned (dev {row['dev_accuracy']:.4f}), skipping")
            return row
        ckpt = ctx.run_dir.root / target.checkpoint.path
        if not (ckpt / "config.json").exists():
            raise StageError(f"{ckpt}: pretrained checkpoint missing; run the pretrain stage for {target.size} first")
        tokenizer = load_tokenizer(ckpt)
        torch.manual_seed(cfg.seed)  # the new classifier head's init is part of what the seed fixes
        model = load_classifier(ckpt, num_labels=task.num_labels, dropout=cfg.dropout)
        model.to(pick_device())
        settings = TrainSettings.from_finetune(cfg, len(task.train))
        result = finetune_(model, settings, tokenizer=tokenizer, train=task.train, dev=task.dev, console=ctx.console, description=f"finetune {size}")
        test_acc = evaluate_accuracy(model, tokenizer, task.test, cfg.max_length)
        save_classifier(model.to("cpu"), tokenizer, out / "model")
        row = {
            "model": size,
            "size": target.size,
            "pretrained_from": target.checkpoint.record(),
            "params": sum(p.numel() for p in model.parameters()),
            "dev_accuracy": result.best_dev_accuracy,
            "test_accuracy": test_acc,
            "steps": result.steps,
            "best_step": result.best_step,
            "seconds": round(result.seconds, 3),
            "model_dir": f"{self.name}/{size}/model",
            "history": result.history,
        }
        atomic.write_json(done, row)
        ctx.console.print(f"  {size}: dev {row['dev_accuracy']:.4f}, test {test_acc:.4f}, {result.steps} steps, {result.seconds:.0f} s")
        return row


def pretrained_starts(ctx: StageContext) -> tuple[list[Any], Any]:
    """The models to finetune for `finetune.from` and the matched-perplexity choice
    (`tlc_export.finetune.checkpoints`), from the pretrain stage's results."""
    from tlc_export.finetune.checkpoints import finetune_targets

    cfg = ctx.recipe.finetune
    assert cfg is not None
    path = ctx.input_dir("pretrain") / "results.json"
    if not path.is_file():
        raise StageError(f"{path}: missing; run the pretrain stage first")
    from tlc_export.atomic import read_jsonl

    rows = json.loads(path.read_text()).get("models", [])
    sizes = [s.name for s in ctx.recipe.models.grid()]
    curves = {s: read_jsonl(f) for s in sizes if (f := ctx.input_dir("pretrain") / s / "curves.jsonl").is_file()}
    targets, match = finetune_targets(cfg.start_from, rows, sizes, curves)
    if match is not None and cfg.start_from == "matched-perplexity":
        picked = ", ".join(f"{s} {c.tag} (ppl {c.val_ppl:.2f})" for s, c in match.choices.items())
        ctx.console.print(f"  matched perplexity ≤ {match.target_ppl:.2f} ({match.worst_size}'s final): {picked}")
    return targets, match


def results_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="finetune")
    for col in ("model", "params", "dev acc", "test acc", "steps", "best step", "seconds"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(
            r["model"], f"{r['params'] / 1e6:.2f} M", f"{r['dev_accuracy']:.4f}", f"{r['test_accuracy']:.4f}",
            str(r["steps"]), str(r["best_step"]), f"{r['seconds']:.0f}",
        )
    return table

