"""Parallel tokenization into token files, resumable shard by shard, published atomically.

The main process reads documents in corpus order, routes each to a split (`SplitRouter`) and cuts
each split's stream into shards of about `shard_bytes` of text. Worker processes encode shards;
the main process appends their ids to `<split>.bin` strictly in shard order, so the files are
byte-identical for any number of workers. After every appended shard the files are fsync'd and
`progress.json` records how far each split got: after a kill the next run truncates the files to
that point, re-reads the corpus (reading is much cheaper than encoding), skips the shards already
written and goes on. Memory is bounded by the shards in flight, never by the corpus. Everything
is written into `.tokens.partial/` and renamed to `tokens/` only when complete.

Workers are started with "spawn" (no fork of a process that may hold torch/OpenMP or tokenizers
threads): a script that calls this directly needs the usual `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlc_export import atomic, integrity
from tlc_export.data.encode_worker import encode_texts, init_worker
from tlc_export.data.shards import (
    GrowingFiles,
    publish,
    resume,
    save_progress,
    signature,
)
from tlc_export.data.sources import Document
from tlc_export.data.split import SplitRouter
from tlc_export.data.token_files import (
    DOC_END_DTYPE,
    DOC_HASH_DTYPE,
    DOC_SOURCE_DTYPE,
    FORMAT,
    SPLITS,
    TOKENS_DIR,
    VERSION,
    split_files,
    token_dtype,
    tokenizer_sha256,
)
from tlc_export.errors import StageError

MAX_SHARD_BYTES = 4 << 20  # text per shard: the unit of work, of resume, and of memory per worker
MIN_SHARD_BYTES = 256 << 10


def shard_bytes_for(total_bytes: int | None) -> int:
    """About 64 shards for a small corpus (so every worker gets several), at most 4 MB each.

    Depends on the corpus only, never on the number of workers: an interrupted run resumes with
    any `data.workers`. The files' bytes do not depend on it at all.
    """
    if total_bytes is None:
        return MAX_SHARD_BYTES
    return int(min(MAX_SHARD_BYTES, max(MIN_SHARD_BYTES, total_bytes // 64)))
PARTIAL_DIR = ".tokens.partial"


def available_cpus() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class SplitStats:
    shards: int = 0
    tokens: int = 0
    documents: int = 0
    bytes: int = 0
    per_source: dict[str, list[int]] = field(default_factory=dict)  # source -> [documents, tokens, bytes]

    def to_json(self) -> dict[str, Any]:
        return {"shards": self.shards, "tokens": self.tokens, "documents": self.documents, "bytes": self.bytes,
                "per_source": self.per_source}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SplitStats:
        return cls(d["shards"], d["tokens"], d["documents"], d["bytes"], {k: list(v) for k, v in d["per_source"].items()})


class _SplitFiles(GrowingFiles):
    """The growing files of one split (`shards.GrowingFiles`) and its counts."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, stats: SplitStats) -> None:
        self.split, self.dtype, self.stats = split, dtype, stats
        names = split_files(split)
        super().__init__(folder, {
            "tokens": (names["tokens"], stats.tokens * dtype.itemsize),
            "document_ends": (names["document_ends"], stats.documents * DOC_END_DTYPE.itemsize),
            "document_sources": (names["document_sources"], stats.documents * DOC_SOURCE_DTYPE.itemsize),
            "document_hashes": (names["document_hashes"], stats.documents * DOC_HASH_DTYPE.itemsize)})

    def append(self, ids: np.ndarray, lengths: np.ndarray, sources: list[int], nbytes: list[int],
               hashes: list[int]) -> None:
        s = self.stats
        ends = (s.tokens + np.cumsum(lengths)).astype(DOC_END_DTYPE)
        for key, arr in (("tokens", ids.astype(self.dtype, copy=False)), ("document_ends", ends),
                         ("document_sources", np.asarray(sources, dtype=DOC_SOURCE_DTYPE)),
                         ("document_hashes", np.asarray(hashes, dtype=DOC_HASH_DTYPE))):
            self.write(key, arr.tobytes())
        for src, n_tok, n_b in zip(sources, lengths.tolist(), nbytes, strict=True):
            row = s.per_source.setdefault(str(src), [0, 0, 0])
            row[0] += 1
            row[1] += n_tok
            row[2] += n_b
        s.tokens += int(lengths.sum())
        s.documents += len(lengths)
        s.bytes += sum(nbytes)
        s.shards += 1


@dataclass
class _Shard:
    split: str
    number: int
    texts: list[str] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)  # subsample hash of each document (data.fraction)

    size: int = 0  # sum of nbytes, kept up to date by the writer


@dataclass
class TokenFilesResult:
    headers: dict[str, dict[str, Any]]  # split -> header written beside the files
    text_sha256: str  # of every document in corpus order
    documents_read: int
    resumed_shards: int  # shards found finished from an interrupted run
    workers: int


def write_token_files(
    documents: Iterable[Document],
    *,
    score: Callable[[Document], float],
    fraction_hash: Callable[[Document], int],
    router: SplitRouter[Document],
    out_dir: Path,
    tokenizer_dir: Path,
    vocab_size: int,
    eos_id: int,
    source_labels: list[str],
    plan: dict[str, Any],
    workers: int,
    min_tokens: int = 1,
    shard_bytes: int = MAX_SHARD_BYTES,
    on_progress: Callable[[int], None] | None = None,
    on_commit: Callable[[str, int], None] | None = None,
) -> TokenFilesResult:
    """Tokenize `documents` into `out_dir/tokens/` (see `token_files`); resume `out_dir/.tokens.partial/`.

    `fraction_hash(document)` is stored per document (`<split>.frac`) for `data.fraction`.
    `plan` describes everything that decides the output besides the tokenizer (sources, split
    settings); partial work from a different plan or tokenizer is discarded. `min_tokens`: each
    split must have at least this many tokens, else nothing is published. `on_progress(bytes)`
    after each shard (text bytes); `on_commit(split, shard)` after a shard is durably written.
    """
    dtype = token_dtype(vocab_size)
    tok_sha = tokenizer_sha256(tokenizer_dir)
    sig = signature({"plan": plan, "tokenizer_sha256": tok_sha, "dtype": dtype.str, "shard_bytes": shard_bytes,
                     "eos_id": eos_id, "version": VERSION})
    partial = Path(out_dir) / PARTIAL_DIR
    saved = resume(partial, sig)
    stats = ({s: SplitStats.from_json(saved["splits"][s]) for s in SPLITS} if saved is not None
             else {s: SplitStats() for s in SPLITS})
    resumed = {s: stats[s].shards for s in SPLITS}

    files = {s: _SplitFiles(partial, s, dtype, stats[s]) for s in SPLITS}
    text_hash = hashlib.sha256()
    n_read = 0
    current = {s: _Shard(s, 0) for s in SPLITS}
    next_number = dict.fromkeys(SPLITS, 0)
    inflight: deque[tuple[_Shard, Future[tuple[np.ndarray, np.ndarray]]]] = deque()
    window = 2 * workers + 1
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker,
        initargs=(str(Path(tokenizer_dir) / "tokenizer.json"), dtype.str, eos_id),
    )

    def commit(shard: _Shard, fut: Future[tuple[np.ndarray, np.ndarray]]) -> None:
        try:
            ids, lengths = fut.result()
        except BrokenProcessPool:
            raise StageError(
                "data: a tokenizer process died (out of memory?); re-run to resume from the last finished "
                "shard, with a lower `data.workers` if memory is short"
            ) from None
        f = files[shard.split]
        f.append(ids, lengths, shard.sources, shard.nbytes, shard.hashes)
        f.sync()
        save_progress(partial, sig, {"splits": {s: stats[s].to_json() for s in SPLITS}})
        if on_progress is not None:
            on_progress(shard.size)
        if on_commit is not None:
            on_commit(shard.split, shard.number)

    def emit(split: str) -> None:
        shard = current[split]
        next_number[split] += 1
        current[split] = _Shard(split, next_number[split])
        if shard.number < resumed[split]:
            if on_progress is not None:
                on_progress(shard.size)  # written by the interrupted run
            return
        inflight.append((shard, pool.submit(encode_texts, shard.texts)))
        while len(inflight) >= window:
            commit(*inflight.popleft())

    sizes: dict[int, int] = {}  # id(document) -> UTF-8 bytes, while the router holds it

    def add(routed: list[tuple[str, Document]]) -> None:
        for split, doc in routed:
            shard = current[split]
            shard.texts.append(doc.text)
            shard.sources.append(doc.source)
            shard.nbytes.append(sizes.pop(id(doc)))
            shard.hashes.append(fraction_hash(doc))
            shard.size += shard.nbytes[-1]
            if shard.size >= shard_bytes:
                emit(split)

    try:
        for doc in documents:
            raw = doc.text.encode("utf-8")
            text_hash.update(raw)
            text_hash.update(b"\0")
            sizes[id(doc)] = len(raw)
            n_read += 1
            add(router.route(doc, score(doc)))
        add(router.finish())
        for split in SPLITS:
            if current[split].texts:
                emit(split)
        while inflight:
            commit(*inflight.popleft())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for f in files.values():
            f.close()
        raise
    pool.shutdown(wait=True)
    for f in files.values():
        f.close()

    for split in SPLITS:
        if stats[split].tokens < min_tokens:
            raise StageError(
                f"data: the {split} split has {stats[split].tokens:,} tokens, fewer than one sequence of "
                f"data.max_seq_len ({min_tokens}); add data sources, lower data.max_seq_len"
                + (", or raise data.min_val_documents / data.val_fraction" if split == "val" else "")
            )
    headers = {}
    for split in SPLITS:
        s, names = stats[split], split_files(split)
        headers[split] = {
            "format": FORMAT, "version": VERSION, "split": split, "dtype": dtype.name,
            "tokens": s.tokens, "documents": s.documents, "bytes": s.bytes, "eos_id": eos_id,
            "vocab_size": vocab_size, "tokenizer_sha256": tok_sha,
            "files": {k: names[k] for k in ("tokens", "document_ends", "document_sources", "document_hashes")},
            "sha256": {k: files[split].sha256(k)
                       for k in ("tokens", "document_ends", "document_sources", "document_hashes")},
            "sources": [
                {"source": i, "label": label, **dict(zip(("documents", "tokens", "bytes"),
                                                          s.per_source.get(str(i), [0, 0, 0]), strict=True))}
                for i, label in enumerate(source_labels)
            ],
        }
        atomic.write_json(partial / names["header"], headers[split])
    publish(partial, Path(out_dir) / TOKENS_DIR)
    for split in SPLITS:  # hashed as written: the stage's checksum record does not read them again
        for key, digest in headers[split]["sha256"].items():
            integrity.note(Path(out_dir) / TOKENS_DIR / headers[split]["files"][key], digest)
    return TokenFilesResult(headers, text_hash.hexdigest(), n_read, sum(resumed.values()), workers)
