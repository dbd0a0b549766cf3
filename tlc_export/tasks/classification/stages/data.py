"""`data` stage: streamed corpus → hash split → BPE tokenizer on a bounded sample → token files."""

from __future__ import annotations

import time
from typing import Any

from tlc_export import atomic
from tlc_export.stages.base import Stage, StageContext


class DataStage(Stage):
    name = "data"
    sections = ("data", "tokenizer")
    inputs = ()
    # The pretrain stage subsamples the training documents (by the hashes stored here), so every
    # data.fraction shares one tokenizer, one validation split and one set of token files.
    ignores = {"data": frozenset({"fraction"})}

    def config_payload(self, recipe: Any, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """The task's settings join the key: they decide which documents pretraining leaves out
        (brown-genre) and which evaluation texts the overlap check looks for."""
        out = super().config_payload(recipe, options)
        if recipe.finetune is not None:
            out["finetune.task"] = recipe.finetune.task.model_dump(mode="json")
        return out

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        from tlc_export.data.corpus import CorpusReader
        from tlc_export.data.sources import source_size_bytes
        from tlc_export.data.split import SplitRouter
        from tlc_export.data.token_files import TOKENS_DIR
        from tlc_export.data.token_writer import available_cpus, shard_bytes_for, write_token_files
        from tlc_export.data.tokenizer import EOS_ID, train_tokenizer

        recipe, out, console = ctx.recipe, ctx.out_dir, ctx.console
        d, tcfg = recipe.data, recipe.tokenizer
        t0 = time.perf_counter()
        for i, src in enumerate(d.sources):
            console.print(f"  source {i}: [cyan]{src.label}[/cyan]")

        reader = CorpusReader(recipe)
        overlap, heldout = self._overlap_check(ctx)
        with console.status(f"[bold]data[/bold]: reading a {tcfg.sample_bytes / 1e6:g} MB tokenizer sample"):
            sample = reader.take_sample(tcfg.sample_bytes)
        spec = sample.spec(tcfg.sample_bytes)
        with console.status(
            f"[bold]data[/bold]: training byte-level BPE (vocab {tcfg.vocab_size:,}) on "
            f"{spec['bytes'] / 1e6:.1f} MB ({spec['documents']:,} documents"
            + (", the whole training split)" if sample.exhausted else ")")
        ):
            t_tok = time.perf_counter()
            tok_info = train_tokenizer(sample.texts, tcfg, out / "tokenizer", model_max_length=d.max_seq_len,
                                       sample=spec)
            tok_seconds = time.perf_counter() - t_tok
        console.print(
            f"  tokenizer: {tok_info['vocab_size']:,} tokens, trained on {spec['bytes'] / 1e6:.1f} MB"
            + (" (reused from cache)" if tok_info["cached"] else f" in {tok_seconds:.1f}s")
        )
        read_per_source, n_held_out = sample.read_per_source, len(sample.held_out)
        del sample  # its texts stay alive only in the reader's replay buffers, until tokenized

        sizes = [source_size_bytes(s, recipe) for s in d.sources]
        total = sum(sizes) if all(s is not None for s in sizes) else None  # type: ignore[misc]
        workers = d.workers or available_cpus()
        router = SplitRouter(d.val_fraction, d.min_val_documents)
        plan = {"data": d.model_dump(mode="json", exclude=set(type(d).execution_only) | self.ignores["data"]),
                "tokenizer": tok_info["checksum"]}
        t_enc = time.perf_counter()
        with Progress(
            TextColumn(f"  tokenizing ({workers} worker{'s' if workers > 1 else ''})"), BarColumn(),
            DownloadColumn(), TransferSpeedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        ) as progress:
            task = progress.add_task("tokenize", total=total)
            written = write_token_files(
                overlap.passing_documents(reader.documents()) if overlap else reader.documents(), score=reader.score, fraction_hash=reader.fraction_hash, router=router, out_dir=out,
                tokenizer_dir=out / "tokenizer", vocab_size=tok_info["vocab_size"], eos_id=EOS_ID,
                source_labels=[s.label for s in d.sources], plan=plan, workers=workers,
                min_tokens=d.max_seq_len, shard_bytes=shard_bytes_for(total),
                on_progress=lambda n: progress.advance(task, n),
            )
        enc_seconds = time.perf_counter() - t_enc
        heads = written.headers
        text_bytes = heads["train"]["bytes"] + heads["val"]["bytes"]
        # Validation documents the tokenizer saw: only possible when min_val_documents topped up the
        # hash split of a corpus larger than the sample, which could not know them yet.
        in_sample = 0 if spec["whole_corpus"] else sum(
            doc.position < read_per_source[doc.source] for doc in router.topped_up)
        seconds = time.perf_counter() - t0
        results = {
            "documents": {s: heads[s]["documents"] for s in heads},
            "tokens": {s: heads[s]["tokens"] for s in heads},
            "bytes": {s: heads[s]["bytes"] for s in heads},
            "sources": [
                {"source": i, "kind": src.kind, "label": src.label, "path": src.path, "name": src.name,
                 **{s: {k: heads[s]["sources"][i][k] for k in ("documents", "tokens", "bytes")} for s in heads}}
                for i, src in enumerate(d.sources)
            ],
            "token_files": {"folder": f"{self.name}/{TOKENS_DIR}", "dtype": heads["train"]["dtype"],
                            "tokenizer_sha256": heads["train"]["tokenizer_sha256"]},
            "tokenizer": {"vocab_size": tok_info["vocab_size"], "checksum": tok_info["checksum"],
                          "cached": tok_info["cached"], "seconds": round(tok_seconds, 2), "sample": spec,
                          "validation_documents_in_sample": in_sample,
                          "held_out_before_training": n_held_out},
            "split": {"val_fraction": d.val_fraction, "min_val_documents": d.min_val_documents, "seed": d.seed,
                      "hashed_val_documents": router.hashed_val,
                      "topped_up_val_documents": len(router.topped_up)},
            "text_checksum": written.text_sha256,
            "max_seq_len": d.max_seq_len,
            "workers": written.workers,
            "resumed_shards": written.resumed_shards,
            "tokenize_seconds": round(enc_seconds, 2),
            "tokenize_mb_per_s": round(text_bytes / 1e6 / max(enc_seconds, 1e-9), 3),
            "seconds": round(seconds, 2),
            "task_overlap": ({**overlap.result(), "heldout_documents": heldout} if overlap else None),
        }
        atomic.write_json(out / "results.json", results)
        console.print(
            f"  tokens: {heads['train']['tokens']:,} train / {heads['val']['tokens']:,} validation "
            f"({heads['train']['dtype']}), {heads['train']['documents']:,} / {heads['val']['documents']:,} "
            f"documents; {text_bytes / 1e6:.1f} MB at {results['tokenize_mb_per_s']:.2f} MB/s"
        )
        if overlap:
            from tlc_export.data.overlap import overlap_line

            o = results["task_overlap"]
            hit = any(v["examples_overlapping"] for v in o["splits"].values())
            console.print(("  [bold red]task overlap:[/] " if hit else "  task overlap: ") + overlap_line(o)
                          + (f"; {sum(heldout.values())} task document(s) left out of pretraining" if heldout else ""))
        return {
            "tokenizer": f"{self.name}/tokenizer",
            "tokens": f"{self.name}/{TOKENS_DIR}",
            "results": f"{self.name}/results.json",
            "documents": results["documents"],
            "tokens_per_split": results["tokens"],
            "vocab_size": tok_info["vocab_size"],
            "task_overlap": ({s: v["examples_overlapping"] for s, v in results["task_overlap"]["splits"].items()}
                             if overlap else None),
        }

    def _overlap_check(self, ctx: StageContext) -> tuple[Any, dict[str, int]]:
        """An n-gram check of the finetune task's dev and test texts (None without a task), and how many
        pretraining documents each source leaves out for the task."""
        from tlc_export.data.overlap import OverlapCheck
        from tlc_export.data.sources import task_heldout_positions

        recipe = ctx.recipe
        if recipe.finetune is None:
            return None, {}
        from tlc_export.data.task import load_task

        task = load_task(recipe.finetune.task, recipe)
        check = OverlapCheck({s: [e.text if e.text_pair is None else f"{e.text} {e.text_pair}" for e in rows]
                              for s, rows in (("dev", task.dev), ("test", task.test))})
        heldout = {src.label: n for src in recipe.data.sources if (n := len(task_heldout_positions(src, recipe)))}
        return check, heldout
