"""`finetune` stage: every pretrained size becomes a classifier on the task.

Per size, every (lr, seed) of the recipe's grid is trained from the pretrained checkpoint; dev picks
the checkpoint within a candidate and the candidate within the grid (the split jobs are in
`tlc_export.scoring`). The test split is touched only after the choice, to report. Every
candidate's dev score is recorded (`finetune/<size>/candidates.jsonl`, and in the size's row); the
kept model is `finetune/<size>/model/` (its `selection.json` names its candidate); per-example dev and
test predictions go to `finetune/<size>/predictions.npz`.

Resume: finished candidates are not retrained. The best model so far is saved before its
candidate's record is appended, so after a crash the folder and the records agree, or the
candidate that was being recorded is simply trained again.
"""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from tlc_export import atomic
from tlc_export.errors import StageError
from tlc_export.scoring import (
    REPORT_SPLIT,
    SELECTION_SPLIT,
    majority_fields,
    pct_ci,
)
from tlc_export.stages.base import Stage, StageContext

RESULTS = "results.json"
CANDIDATES = "candidates.jsonl"
PREDICTIONS = "predictions.npz"


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def candidate_key(lr: float, seed: int) -> str:
    return f"lr={lr:g},seed={seed}"


class FinetuneStage(Stage):
    name = "finetune"
    sections = ("finetune",)
    inputs = ("pretrain",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        import torch

        cfg = ctx.recipe.finetune
        if cfg is None:
            raise StageError("recipe has no `finetune` section; add one to run this stage")
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        task = ctx.family.read(ctx.recipe)
        counts = task.counts()
        grid = cfg.grid()
        ctx.console.print(f"[bold]finetune[/]: task {cfg.task.kind} {counts}, {task.num_labels} labels; "
                          f"{len(grid)} (lr, seed) candidate(s) per size, chosen on {SELECTION_SPLIT}")
        targets, match = pretrained_starts(ctx)
        done = [self._one(ctx, t, task) for t in targets]
        rows = [r for r, t in zip(done, targets, strict=True) if t.primary]
        extra = [r for r, t in zip(done, targets, strict=True) if not t.primary]
        majority = majority_fields({"dev": [e.label for e in task.dev], "test": [e.label for e in task.test]})
        atomic.write_json(ctx.out_dir / RESULTS, {
            "task": cfg.task.kind, "examples": counts, "label_names": task.label_names,
            "selection_split": SELECTION_SPLIT, "report_split": REPORT_SPLIT, "majority": majority,
            "from": cfg.start_from, "models": rows, "checkpoints": extra,
            "matched_perplexity": match.record() if match else None,
        })
        ctx.console.print(results_table(done))
        for r in done:
            if r.get("converged") is False:
                ctx.console.print(f"[bold yellow]{r['model']}'s chosen candidate {converged_text(r)}[/]; raise "
                                  "finetune.epochs (the cap) or set finetune.patience")
            if not r["learned_task"]:
                ctx.console.print(f"[bold red]{r['model']} did not learn the task:[/] {not_learned_text(r, task.label_names)}")
        return {
            "results": f"{self.name}/{RESULTS}",
            "models": {r["model"]: r["model_dir"] for r in rows},
            "dev_accuracy": {r["model"]: r["dev_accuracy"] for r in rows},
            "chosen": {r["model"]: {"lr": r["lr"], "seed": r["seed"]} for r in rows},
            "learned_task": {r["model"]: r["learned_task"] for r in rows},
            "converged": {r["model"]: r.get("converged") for r in rows},
        }

    def _one(self, ctx: StageContext, target: Any, task: Any) -> dict[str, Any]:
        from tlc_export.finetune import encode_examples, load_tokenizer
        from tlc_export.predictions import save_predictions
        cfg = ctx.recipe.finetune
        assert cfg is not None
        size = target.key  # the size's name, or `<size>@<tag>` for an earlier checkpoint (every-kept)
        out = ctx.out_dir / size
        done = out / RESULTS
        if done.exists() and (out / "model" / "config.json").exists() and (out / PREDICTIONS).exists():
            row = json.loads(done.read_text())
            ctx.console.print(f"  {size}: already finetuned (lr {row['lr']:g}, seed {row['seed']}, "
                              f"dev {row['dev_accuracy']:.4f}), skipping")
            return row
        ckpt = ctx.run_dir.root / target.checkpoint.path
        if not (ckpt / "config.json").exists():
            raise StageError(f"{ckpt}: pretrained checkpoint missing; run the pretrain stage for {target.size} first")
        tokenizer = load_tokenizer(ckpt)
        # Selection sees train and dev only; test is encoded after the choice, below.
        train = encode_examples(tokenizer, task.train, cfg.max_length)
        dev = encode_examples(tokenizer, task.dev, cfg.max_length)
        records = self._grid(ctx, size, ckpt, tokenizer, train, dev, task.num_labels)
        chosen = best_candidate(records)
        family = ctx.family
        model = family.build_model(ctx.recipe, checkpoint=out / "model")
        preds = family.predict(model, tokenizer, {"dev": task.dev, "test": task.test}, ctx.recipe)
        save_predictions(out / PREDICTIONS, preds)
        row = {
            "model": size,
            "size": target.size,
            "pretrained_from": target.checkpoint.record(),
            "params": sum(p.numel() for p in model.parameters()),
            "lr": chosen["lr"],
            "seed": chosen["seed"],
            "selected_on": SELECTION_SPLIT,
            "candidates": [{k: r.get(k) for k in ("lr", "seed", "dev_accuracy", "best_step", "steps", "seconds",
                                                  "evaluations", "converged")} for r in records],
            **family.row_fields(preds),
            "steps": chosen["steps"],
            "best_step": chosen["best_step"],
            "converged": chosen.get("converged"),
            "evals_since_best": chosen.get("evals_since_best"),
            "stopped_early": chosen.get("stopped_early"),
            "seconds": chosen["seconds"],
            "grid_seconds": round(sum(r["seconds"] for r in records), 3),
            "model_dir": f"{self.name}/{size}/model",
            "predictions": f"{self.name}/{size}/{PREDICTIONS}",
            "history": chosen["history"],
        }
        atomic.write_json(done, row)
        ctx.console.print(f"  {size}: chose lr {row['lr']:g}, seed {row['seed']} on dev; dev {pct_ci(row, 'dev')}, "
                          f"test {pct_ci(row, 'test')}")
        return row

    def _grid(self, ctx: StageContext, size: str, ckpt: Any, tokenizer: Any, train: Any, dev: Any,
              num_labels: int) -> list[dict[str, Any]]:
        """Train every candidate not yet recorded; keep the best-dev model in `<size>/model`. Returns the records."""
        import torch

        from tlc_export.finetune import TrainSettings, finetune_, save_classifier
        from tlc_export.finetune.model import SELECTION_FILE
        cfg = ctx.recipe.finetune
        assert cfg is not None
        out = ctx.out_dir / size
        log = out / CANDIDATES
        wanted = {candidate_key(lr, seed) for lr, seed in cfg.grid()}
        records = [r for r in atomic.read_jsonl(log) if r.get("key") in wanted]
        saved = out / "model" / SELECTION_FILE
        saved_key = json.loads(saved.read_text()).get("key") if saved.is_file() else None
        if records and best_candidate(records)["key"] != saved_key:
            # The kept model is not the best recorded candidate (a crash between two writes on a
            # non-deterministic device, or an edited grid): start the grid over rather than guess.
            ctx.console.print(f"  [yellow]{size}: saved model does not match the candidate records; retraining the grid[/]")
            records = []
        if not records and log.exists():
            log.unlink()
        have = {r["key"] for r in records}
        best = best_candidate(records)["dev_accuracy"] if records else -1.0
        for lr, seed in cfg.grid():
            key = candidate_key(lr, seed)
            if key in have:
                ctx.console.print(f"  {size} {key}: already trained (dev {next(r for r in records if r['key'] == key)['dev_accuracy']:.4f})")
                continue
            torch.manual_seed(seed)  # the new classifier head's init is part of what the seed fixes
            model = ctx.family.build_model(ctx.recipe, checkpoint=ckpt, num_labels=num_labels,
                                                      dropout=cfg.dropout).to(pick_device())
            settings = TrainSettings.from_finetune(cfg, len(train), lr=lr, seed=seed)
            result = finetune_(model, settings, tokenizer=tokenizer, train=train, dev=dev, console=ctx.console,
                               description=f"finetune {size} {key}")
            rec = {"key": key, "lr": lr, "seed": seed, "dev_accuracy": result.best_dev_accuracy,
                   "best_step": result.best_step, "steps": result.steps, "seconds": round(result.seconds, 3),
                   "evaluations": len(result.history), "evals_since_best": result.evals_since_best,
                   "converged": result.converged, "stopped_early": result.stopped_early, "history": result.history}
            if result.best_dev_accuracy > best:  # ties keep the earlier candidate
                save_classifier(model.to("cpu"), tokenizer, out / "model", selection={"key": key, "lr": lr, "seed": seed})
                best = result.best_dev_accuracy
            atomic.append_jsonl(log, rec)
            records.append(rec)
            ctx.console.print(f"  {size} {key}: dev {result.best_dev_accuracy:.4f} at step {result.best_step}/{result.steps} "
                              f"({result.seconds:.0f} s); " + converged_text(rec))
            del model
        order = {candidate_key(lr, seed): i for i, (lr, seed) in enumerate(cfg.grid())}
        return sorted(records, key=lambda r: order[r["key"]])


def best_candidate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate with the best dev accuracy; ties go to the one trained first (records in grid order)."""
    if not records:
        raise StageError("finetune: no candidate was trained; check finetune.lr and finetune.seeds")
    best = records[0]
    for r in records[1:]:
        if r["dev_accuracy"] > best["dev_accuracy"]:
            best = r
    return best


def converged_text(rec: dict[str, Any]) -> str:
    """'converged (best dev 3 of 5 evaluations before the end)' or 'NOT converged (…)'."""
    since, n = rec.get("evals_since_best"), rec.get("evaluations")
    if rec.get("converged") is None:
        return "convergence not recorded"
    where = f"best dev {since} of {n} evaluation(s) before the end"
    return f"converged ({where})" if rec["converged"] else f"NOT converged ({where}): dev accuracy was still improving"


def not_learned_text(row: dict[str, Any], label_names: list[str] | None = None) -> str:
    """Why a size is flagged: its report-split accuracy against always answering the majority label."""
    label = row.get("majority_label")
    name = label_names[label] if label_names and label is not None and label < len(label_names) else label
    return (f"{REPORT_SPLIT} accuracy {pct_ci(row, REPORT_SPLIT)} is not significantly above always answering "
            f"{escape(repr(name))} ({100 * row['majority_accuracy']:.1f} %; exact McNemar p = {row['above_majority_p']:.3g})")


def pretrained_starts(ctx: StageContext) -> tuple[list[Any], Any]:
    """The models to finetune for `finetune.from` and the matched-perplexity choice
    (`tlc_export.finetune.checkpoints`), from the pretrain stage's results."""
    from tlc_export.finetune.checkpoints import finetune_targets

    cfg = ctx.recipe.finetune
    assert cfg is not None
    path = ctx.input_dir("pretrain") / "results.json"
    sizes = [s.name for s in ctx.recipe.models.grid()]
    if not path.is_file():
        if cfg.start_from != "final":
            raise StageError(f"{path}: missing; finetune.from: {cfg.start_from} needs the pretrain stage's results "
                             "(kept checkpoints and perplexities); run the pretrain stage first")
        # `final` needs only each size's checkpoint folder (checked, with its own error, when it is loaded).
        rows = [{"model": s} for s in sizes]
    else:
        rows = json.loads(path.read_text()).get("models", [])
    from tlc_export.atomic import read_jsonl


    curves = {s: read_jsonl(f) for s in sizes if (f := ctx.input_dir("pretrain") / s / "curves.jsonl").is_file()}
    targets, match = finetune_targets(cfg.start_from, rows, sizes, curves)
    if match is not None and cfg.start_from == "matched-perplexity":
        picked = ", ".join(f"{s} {c.tag} (ppl {c.val_ppl:.2f})" for s, c in match.choices.items())
        ctx.console.print(f"  matched perplexity ≤ {match.target_ppl:.2f} ({match.worst_size}'s final): {picked}")
    return targets, match


def results_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"finetune (lr and seed chosen on {SELECTION_SPLIT}; {REPORT_SPLIT} reports; 95 % intervals)")
    for col in ("model", "params", "lr", "seed", "dev acc", "test acc", "majority", "learned", "converged", "steps",
                "best step", "seconds"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(
            r["model"], f"{r['params'] / 1e6:.2f} M", f"{r['lr']:g}", str(r["seed"]), pct_ci(r, "dev"), pct_ci(r, "test"),
            f"{100 * r['majority_accuracy']:.1f} %", "yes" if r["learned_task"] else "[bold red]NO[/]",
            "-" if r.get("converged") is None else "yes" if r["converged"] else "[bold yellow]NO[/]",
            str(r["steps"]), str(r["best_step"]), f"{r['seconds']:.0f}",
        )
    return table
