"""`translation` stage: the paper's second system. Every size of `translation.sizes` trains for the same
wall-clock budget (§3, Figure 5), then dev and test are translated with the recipe's decoding and scored
with BLEU and chrF (dev selects, test reports, as for classification).

```
translation/data.json            the split report (reader, rule, pairs and books per split)
translation/tokenizer/           BPE trained on the training pairs (source/ and target/ when not shared)
translation/<size>/curves.jsonl  dev loss, greedy BLEU/chrF on the fixed dev sample, every eval_every_s
translation/<size>/checkpoint/   MarianMTModel (save_pretrained) + done.json (the training row)
translation/<size>/predictions.json  {split: {sources, references, hypotheses}} with the recipe's decoding
translation/<size>/results.json  the training row + the family's metric fields (dev/test BLEU, chrF, intervals)
translation/results.json         {data, decoding, models: [row]}
translation/curves_bleu_wallclock.png, curves_bleu_steps.png, curves_loss_wallclock.png (Figure 5)
translation/pairs/               the training pairs' token ids (memory-mapped; `translation.pair_files`)
```
Resume: a finished size (its results.json) is reused; an interrupted one resumes from its state; an
interrupted encoding of the training pairs resumes from its last shard. Under torchrun every rank
trains (`train.train_translation_size`); rank 0 alone reads, encodes, evaluates, decodes and writes.
"""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from tlc_export import atomic, distributed
from tlc_export.errors import StageError
from tlc_export.stages.base import Stage, StageContext

RESULTS = "results.json"
PREDICTIONS = "predictions.json"


class TranslationStage(Stage):
    name = "translation"
    distributed = True
    sections = ("translation",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        import torch

        from tlc_export.pretrain.plots import plot_curves
        from tlc_export.tasks.translation.pair_files import PAIRS_DIR, PairFiles, tokenizers_sha256
        from tlc_export.tasks.translation.tokenizer import TranslationTokenizers
        from tlc_export.tasks.translation.train import CURVES_FILE

        cfg = ctx.recipe.translation
        if cfg is None:
            raise StageError("recipe has no `translation` section")
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)
        tok_dir = ctx.out_dir / "tokenizer"
        main = distributed.is_main()
        data = dev = None
        if main:  # rank 0 reads, trains the BPE and encodes; the other ranks map its files
            data, tokenizers, train, dev = self._prepare(ctx, tok_dir)
        distributed.barrier()
        if not main:
            tokenizers = TranslationTokenizers.load(tok_dir)
            train = PairFiles.open(ctx.out_dir / PAIRS_DIR, "train", tokenizer_sha=tokenizers_sha256(tok_dir))

        rows, curves = [], {}
        for size in cfg.grid():
            rows.append(self._size(ctx, size, tokenizers, train, dev, data))
            if main:
                curves[size.name] = atomic.read_jsonl(ctx.out_dir / size.name / CURVES_FILE)
        outputs = {
            "results": f"{self.name}/{RESULTS}",
            "checkpoints": {r["model"]: f"{self.name}/{r['model']}/checkpoint" for r in rows},
            "curves_bleu_wallclock": f"{self.name}/curves_bleu_wallclock.png",
        }
        if not main:
            return outputs
        assert data is not None
        budget = cfg.train.time_budget_s
        atomic.write_json(ctx.out_dir / RESULTS, {
            "source_lang": cfg.source_lang, "target_lang": cfg.target_lang, "data": data.info,
            "tokenizer": {"shared": tokenizers.shared, "source_vocab": len(tokenizers.source),
                          "target_vocab": len(tokenizers.target)},
            "decoding": cfg.decoding.model_dump(mode="json"), "time_budget_s": budget,
            "world_size": distributed.world_size(), "train_pairs": train.header["pairs"],
            "selection_split": "dev", "report_split": "test", "models": rows,
        })
        plot_curves(curves, "elapsed_s", ctx.out_dir / "curves_bleu_wallclock.png",
                    f"Same {budget:g} s budget: dev BLEU vs wall-clock (Figure 5)", y="dev_bleu")
        plot_curves(curves, "step", ctx.out_dir / "curves_bleu_steps.png", "Dev BLEU vs gradient steps", y="dev_bleu")
        plot_curves(curves, "elapsed_s", ctx.out_dir / "curves_loss_wallclock.png",
                    "Dev loss vs wall-clock", y="dev_loss")
        ctx.console.print(results_table(rows))
        return {**outputs, "test_bleu": {r["model"]: r["test_bleu"] for r in rows}}

    def _prepare(self, ctx: StageContext, tok_dir: Any) -> tuple[Any, Any, Any, Any]:
        """Rank 0: the splits, the BPE (trained once), the training pairs encoded into memory-mapped files
        (`translation/pairs/`, reused while the tokenizer and the data plan are the same), the dev sample."""
        import time

        from tlc_export.tasks.translation.pair_files import open_or_write
        from tlc_export.tasks.translation.tokenizer import TranslationTokenizers, train_tokenizers
        from tlc_export.tasks.translation.train import dev_sample

        cfg = ctx.recipe.translation
        data = ctx.family.read(ctx.recipe)
        counts = {k: f"{v:,}" if v is not None else "streamed" for k, v in data.counts().items()}
        ctx.console.print(f"[bold]translation[/]: {cfg.source_lang}→{cfg.target_lang}, pairs {counts} "
                          f"({data.info['split_rule']})")
        if (tok_dir / "tokenizer.json").is_file() or (tok_dir / "source").is_dir():
            tokenizers = TranslationTokenizers.load(tok_dir)
        else:
            tokenizers = train_tokenizers(data.train, cfg.tokenizer)
            tokenizers.save(tok_dir)
        t0 = time.perf_counter()
        written = {"pairs": 0}

        def progress(n: int) -> None:
            written["pairs"] += n
            ctx.console.print(f"[dim]  encoded {written['pairs']:,} training pairs "
                              f"({time.perf_counter() - t0:.0f} s)[/dim]")

        train = open_or_write(data.train, out_dir=ctx.out_dir, tokenizers=tokenizers, tokenizer_dir=tok_dir,
                              max_source_length=cfg.max_source_length, max_target_length=cfg.max_target_length,
                              plan=pairs_plan(cfg, data.train), on_progress=progress if data.counts()["train"] is None else None)
        skipped = getattr(data.train, "skipped", 0)
        data.info["splits"]["train"].update(pairs=train.header["pairs"], encoded=f"{self.name}/pairs/train.json",
                                            **({"skipped_empty": skipped} if skipped else {}))
        atomic.write_json(ctx.out_dir / "data.json", data.info)
        return data, tokenizers, train, dev_sample(data.dev, tokenizers, cfg)

    def _size(self, ctx: StageContext, size: Any, tokenizers: Any, train: Any, dev: Any, data: Any) -> dict[str, Any]:
        from tlc_export.tasks.translation.train import train_translation_size

        out = ctx.out_dir / size.name
        done = out / RESULTS
        if done.is_file() and (out / PREDICTIONS).is_file():
            if distributed.is_main():
                ctx.console.print(f"  {size.name}: already trained and scored, skipping")
            return json.loads(done.read_text())
        row = train_translation_size(size, ctx.recipe.translation, tokenizers, train, dev, out, console=ctx.console)
        if not distributed.is_main():
            distributed.barrier()  # rank 0 decodes and scores; the next size starts together
            return row
        family = ctx.family
        from tlc_export.pretrain.step import pick_device

        # Decoding on the training device; evaluation is fp32 whatever the training precision.
        model = family.build_model(ctx.recipe, checkpoint=out / "checkpoint").to(pick_device(ctx.recipe.translation.train))
        preds = family.predict(model, tokenizers, {"dev": data.dev, "test": data.test}, ctx.recipe)
        atomic.write_json(out / PREDICTIONS, {s: vars(p) for s, p in preds.items()})
        row = {**row, "checkpoint": f"{self.name}/{size.name}/checkpoint", "curves": f"{self.name}/{size.name}/curves.jsonl",
               "predictions": f"{self.name}/{size.name}/{PREDICTIONS}",
               "decoding": ctx.recipe.translation.decoding.strategy, **family.row_fields(preds)}
        atomic.write_json(done, row)
        flag = "" if row.get("learned_task") is not False else (
            f"  [red](not above copying the source, BLEU {row['copy_baseline_bleu']:.2f}: did not learn the task)[/]")
        ctx.console.print(f"  {size.name}: {row['steps']} steps; dev BLEU {row['dev_bleu']:.2f}, "
                          f"test BLEU {row['test_bleu']:.2f} {_ci(row, 'test')}{flag}")
        distributed.barrier()
        return row


def pairs_plan(cfg: Any, train: Any) -> dict[str, Any]:
    """What decides the encoded training pairs besides the tokenizer: the data section, the languages, and
    for a list (Bible, local files) a checksum of its text, so an edited file is encoded again."""
    import hashlib

    plan: dict[str, Any] = {"data": cfg.data.model_dump(mode="json"), "source_lang": cfg.source_lang,
                            "target_lang": cfg.target_lang}
    if hasattr(train, "__len__"):
        h = hashlib.sha256()
        for p in train:
            h.update(p.source.encode("utf-8") + b"\t" + p.target.encode("utf-8") + b"\n")
        plan["text_sha256"], plan["pairs"] = h.hexdigest(), len(train)
    return plan


def _ci(row: dict[str, Any], split: str) -> str:
    ci = row.get(f"{split}_bleu_ci")
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def results_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="translation (same budget per size; dev selects, test reports; sacrebleu bootstrap 95 %)")
    for col in ("model", "params", "steps", "tokens/s", "dev loss", "dev BLEU", "test BLEU", "test chrF"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['params'] / 1e6:.2f} M", str(r["steps"]), f"{r['tokens_per_s']:,.0f}",
                      f"{r['final_dev_loss']:.3f}", f"{r['dev_bleu']:.2f}", f"{r['test_bleu']:.2f} {_ci(r, 'test')}",
                      f"{r['test_chrf']:.2f}")
    return table
