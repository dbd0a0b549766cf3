"""`data` stage: corpus → validation split → BPE tokenizer → flat token-id streams."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tlc_export import atomic
from tlc_export.errors import StageError
from tlc_export.stages.base import Stage, StageContext

_CHUNK = 2000  # documents encoded per batch call (the Rust encoder parallelises within a batch)


def encode_stream(tokenizer_json: Path, docs: list[str], eos_id: int, progress: Any = None, task: Any = None) -> np.ndarray:
    """Token ids of all documents, each followed by `</s>`, as one int32 array."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    parts: list[np.ndarray] = []
    for start in range(0, len(docs), _CHUNK):
        for enc in tok.encode_batch(docs[start : start + _CHUNK], add_special_tokens=False):
            parts.append(np.asarray(enc.ids, dtype=np.int32))
            parts.append(np.asarray([eos_id], dtype=np.int32))
        if progress is not None:
            progress.advance(task, min(_CHUNK, len(docs) - start))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    # np.save(path) would append ".npy" to the temporary name; write through a handle instead.
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


class DataStage(Stage):
    name = "data"
    sections = ("data", "tokenizer")
    inputs = ()

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from tlc_export.data.corpus import load_source, split_documents
        from tlc_export.data.tokenizer import EOS_ID, text_checksum, train_tokenizer

        recipe, out, console = ctx.recipe, ctx.out_dir, ctx.console
        t0 = time.perf_counter()

        docs: list[str] = []
        sources = []
        for i, src in enumerate(recipe.data.sources):
            with console.status(f"[bold]data[/bold]: loading source {i} ({src.kind})"):
                part = load_source(src, recipe, i)
            docs.extend(part)
            sources.append({"kind": src.kind, "path": src.path, "name": src.name, "documents": len(part)})
            console.print(f"  source {i} [cyan]{src.kind}[/cyan]: {len(part):,} documents")

        d = recipe.data
        train_docs, val_docs = split_documents(docs, d.val_fraction, d.min_val_documents, d.seed)
        console.print(f"  split: {len(train_docs):,} train / {len(val_docs):,} validation documents")

        with console.status(
            f"[bold]data[/bold]: training byte-level BPE (vocab {recipe.tokenizer.vocab_size:,}) "
            f"on {sum(len(x) for x in train_docs) / 1e6:.1f} M characters"
        ):
            tok_info = train_tokenizer(train_docs, recipe.tokenizer, out / "tokenizer", model_max_length=d.max_seq_len)
        console.print(
            f"  tokenizer: {tok_info['vocab_size']:,} tokens"
            + (" (reused from cache)" if tok_info["cached"] else "")
        )

        streams: dict[str, np.ndarray] = {}
        with Progress(
            TextColumn("  encoding {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        ) as progress:
            for split, split_docs in (("train", train_docs), ("val", val_docs)):
                task = progress.add_task(split, total=len(split_docs))
                streams[split] = encode_stream(out / "tokenizer" / "tokenizer.json", split_docs, EOS_ID, progress, task)

        for split, ids in streams.items():
            # Pretraining packs rows of max_seq_len (bos + body + eos); fewer tokens give no rows.
            if len(ids) < d.max_seq_len:
                raise StageError(
                    f"data: the {split} split has {len(ids):,} tokens, fewer than one sequence of "
                    f"data.max_seq_len={d.max_seq_len}; add data sources, lower data.max_seq_len"
                    + (", or raise data.min_val_documents / data.val_fraction" if split == "val" else "")
                )
            _save_npy(out / f"{split}_ids.npy", ids)

        results = {
            "documents": {"train": len(train_docs), "val": len(val_docs)},
            "tokens": {k: int(len(v)) for k, v in streams.items()},
            "characters": {"train": sum(len(x) for x in train_docs), "val": sum(len(x) for x in val_docs)},
            "sources": sources,
            "tokenizer": {"vocab_size": tok_info["vocab_size"], "checksum": tok_info["checksum"]},
            "text_checksum": text_checksum(docs),
            "max_seq_len": d.max_seq_len,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        atomic.write_json(out / "results.json", results)
        console.print(
            f"  tokens: {results['tokens']['train']:,} train / {results['tokens']['val']:,} validation"
        )
        return {
            "tokenizer": f"{self.name}/tokenizer",
            "train_ids": f"{self.name}/train_ids.npy",
            "val_ids": f"{self.name}/val_ids.npy",
            "results": f"{self.name}/results.json",
            "documents": results["documents"],
            "tokens": results["tokens"],
            "vocab_size": tok_info["vocab_size"],
        }
