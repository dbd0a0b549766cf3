"""Training pairs as token files on disk: encoded once, memory-mapped by every size and every rank.

`translation/pairs/` holds, per encoded split (only `train`: dev and test stay small lists):

- `<split>.src.bin`, `<split>.tgt.bin`: every sentence's ids (ending with `</s>`), concatenated;
  `uint16` when the vocabulary has at most 65,536 ids, else `uint32`; little-endian, no header.
- `<split>.src.idx`, `<split>.tgt.idx`: `uint64`, the end offset (exclusive) of each sentence.
- `<split>.json`: the manifest: format, dtype, pair and token counts, truncation lengths, the
  tokenizer's checksum, the plan (which data, which caps), sha256 of the four files and of the text.

The ids are exactly `encode_pairs`'s (the tokenizer's own truncation, `</s>` kept). Pairs are read
as a stream and encoded a shard at a time (the `tokenizers` batch encoder runs on every core), so
memory does not grow with the corpus. After each shard the files are fsync'd and `progress.json`
records the pairs written: a killed run truncates the files to that point, re-reads (cheap) and
skips the pairs already encoded. Everything is written to `.pairs.partial/` and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlc_export import atomic
from tlc_export.data.fetch import sha256_file
from tlc_export.data.shards import GrowingFiles, publish, resume, save_progress, signature
from tlc_export.data.token_files import token_dtype
from tlc_export.errors import StageError

FORMAT = "tlc-pairs"
VERSION = 1
PAIRS_DIR = "pairs"
PARTIAL_DIR = ".pairs.partial"
SHARD_PAIRS = 100_000  # the unit of encoding, of resume and of memory
END_DTYPE = np.dtype("<u8")
SIDES = ("src", "tgt")


def pair_files(split: str) -> dict[str, str]:
    return {"src_ids": f"{split}.src.bin", "src_ends": f"{split}.src.idx", "tgt_ids": f"{split}.tgt.bin",
            "tgt_ends": f"{split}.tgt.idx", "header": f"{split}.json"}


def tokenizers_sha256(tokenizer_dir: Path) -> str:
    """Checksum of the saved translation tokenizer(s) (`tokenizer.json`, or `source/` and `target/`)."""
    files = sorted(Path(tokenizer_dir).rglob("tokenizer.json"))
    if not files:
        raise StageError(f"{tokenizer_dir}: no tokenizer.json; the translation tokenizer must be saved first")
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(tokenizer_dir).as_posix().encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def _backend(tok: Any, max_length: int) -> Any:
    """A copy of the fast tokenizer's Rust backend with the same truncation `encode_pairs` asks for."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(max_length)
    return backend


class _Ragged:
    """`x[i]`: the ids of sentence i, a view into the memory-mapped ids."""

    def __init__(self, ids: np.ndarray, ends: np.ndarray) -> None:
        self.ids, self.ends = ids, ends

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> np.ndarray:
        end = self.ends[i]
        return self.ids[(self.ends[i - 1] if i > 0 else 0):end]

    def lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.ends, dtype=np.int64), prepend=0)


def _map(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    """A read-only map of the file as a plain ndarray view (slicing an `np.memmap` subclass costs ~5× more)."""
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.asarray(np.memmap(path, dtype=dtype, mode="r", shape=(count,)))


@dataclass
class PairFiles:
    """One split's pair files, memory-mapped read-only; the `batching.PairIds` interface."""

    folder: Path
    header: dict[str, Any]
    source: _Ragged
    target: _Ragged
    plan_cache: dict[int, Any] = field(default_factory=dict)  # batching.batch_plan's, per max_tokens

    def __len__(self) -> int:
        return len(self.source)

    def tokens(self, i: int) -> int:
        return len(self.source[i]) + len(self.target[i])

    def source_lengths(self) -> np.ndarray:
        return self.source.lengths()

    def target_lengths(self) -> np.ndarray:
        return self.target.lengths()

    @classmethod
    def open(cls, folder: str | Path, split: str = "train", *, tokenizer_sha: str | None = None) -> PairFiles:
        """Map `folder/<split>.*`, checking every file's size against the manifest (and the tokenizer, if given)."""
        folder = Path(folder)
        names = pair_files(split)
        head_path = folder / names["header"]
        rerun = "delete the folder and re-run the translation stage (`tlc run RECIPE --force translation`)"
        try:
            header = json.loads(head_path.read_text())
        except FileNotFoundError:
            raise StageError(f"{head_path}: missing; the training pairs have not been encoded") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise StageError(f"{head_path}: unreadable manifest ({exc}); {rerun}") from None
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise StageError(f"{head_path}: format {header.get('format')!r} version {header.get('version')!r}, "
                             f"expected {FORMAT!r} version {VERSION}; {rerun}")
        dtype = np.dtype(header["dtype"])
        counts = {"src_ids": (dtype, header["source_tokens"]), "src_ends": (END_DTYPE, header["pairs"]),
                  "tgt_ids": (dtype, header["target_tokens"]), "tgt_ends": (END_DTYPE, header["pairs"])}
        for key, (dt, count) in counts.items():
            path = folder / names[key]
            size = path.stat().st_size if path.is_file() else None
            if size != dt.itemsize * count:
                raise StageError(f"{path}: {'missing' if size is None else f'{size:,} bytes'}, but {head_path.name} "
                                 f"says {count:,} × {dt.itemsize} bytes; the files are incomplete; {rerun}")
        if tokenizer_sha is not None and header.get("tokenizer_sha256") != tokenizer_sha:
            raise StageError(f"{head_path}: encoded with a different tokenizer (field `tokenizer_sha256`); {rerun}")
        arr = {k: _map(folder / names[k], dt, c) for k, (dt, c) in counts.items()}
        return cls(folder, header, _Ragged(arr["src_ids"], arr["src_ends"]), _Ragged(arr["tgt_ids"], arr["tgt_ends"]))


class _Growing(GrowingFiles):
    """The four growing files of a split (`data.shards.GrowingFiles`), cut to what `progress.json` records."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, done: dict[str, int]) -> None:
        names = pair_files(split)
        super().__init__(folder, {
            "src_ids": (names["src_ids"], done["source_tokens"] * dtype.itemsize),
            "src_ends": (names["src_ends"], done["pairs"] * 8),
            "tgt_ids": (names["tgt_ids"], done["target_tokens"] * dtype.itemsize),
            "tgt_ends": (names["tgt_ends"], done["pairs"] * 8)})
        self.dtype = dtype
        self.tokens = {"src": done["source_tokens"], "tgt": done["target_tokens"]}

    def append(self, side: str, ids: list[list[int]]) -> None:
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((i for x in ids for i in x), dtype=self.dtype, count=int(lengths.sum()))
        ends = (self.tokens[side] + np.cumsum(lengths)).astype(END_DTYPE)
        self.tokens[side] += int(lengths.sum())
        for key, arr in ((f"{side}_ids", flat), (f"{side}_ends", ends)):
            self.write(key, arr.tobytes())


@dataclass
class PairFilesResult:
    header: dict[str, Any]
    resumed_pairs: int  # pairs found encoded by an interrupted run (not encoded again)


def write_pair_files(
    pairs: Iterable[Any],
    *,
    out_dir: Path,
    tokenizers: Any,
    tokenizer_sha: str,
    max_source_length: int,
    max_target_length: int,
    plan: dict[str, Any],
    split: str = "train",
    shard_pairs: int = SHARD_PAIRS,
    on_progress: Callable[[int], None] | None = None,
    on_commit: Callable[[int], None] | None = None,
) -> PairFilesResult:
    """Encode `pairs` (`.source`, `.target`) into `out_dir/pairs/<split>.*`; resume `out_dir/.pairs.partial/`.

    `plan` describes the data (reader, caps): partial work from another plan or tokenizer is
    discarded. `on_progress(pairs)` after each shard; `on_commit(pairs_written)` once a shard is durable.
    """
    vocab = max(len(tokenizers.source), len(tokenizers.target))
    dtype = token_dtype(vocab)
    sig = signature({"plan": plan, "tokenizer_sha256": tokenizer_sha, "dtype": dtype.str,
                     "max_source_length": max_source_length, "max_target_length": max_target_length,
                     "version": VERSION, "split": split})
    partial, final = Path(out_dir) / PARTIAL_DIR, Path(out_dir) / PAIRS_DIR
    done = {"pairs": 0, "source_tokens": 0, "target_tokens": 0}
    saved = resume(partial, sig)
    if saved is not None:
        done = {k: int(saved[k]) for k in done}
    resumed = done["pairs"]
    src_enc, tgt_enc = _backend(tokenizers.source, max_source_length), _backend(tokenizers.target, max_target_length)
    files = _Growing(partial, split, dtype, done)
    text_hash = hashlib.sha256()
    n_read = 0
    shard: list[Any] = []

    def commit() -> None:
        # encode_batch_fast (tokenizers >= 0.20) skips the offsets we never read: the same ids.
        enc_s = getattr(src_enc, "encode_batch_fast", src_enc.encode_batch)
        enc_t = getattr(tgt_enc, "encode_batch_fast", tgt_enc.encode_batch)
        files.append("src", [e.ids for e in enc_s([p.source for p in shard])])
        files.append("tgt", [e.ids for e in enc_t([p.target for p in shard])])
        files.sync()
        done.update(pairs=done["pairs"] + len(shard), source_tokens=files.tokens["src"],
                    target_tokens=files.tokens["tgt"])
        save_progress(partial, sig, done)
        if on_progress is not None:
            on_progress(len(shard))
        if on_commit is not None:
            on_commit(done["pairs"])
        shard.clear()

    try:
        for p in pairs:
            text_hash.update(p.source.encode("utf-8") + b"\t" + p.target.encode("utf-8") + b"\n")
            n_read += 1
            if n_read <= resumed:
                if on_progress is not None and n_read % shard_pairs == 0:
                    on_progress(shard_pairs)
                continue
            shard.append(p)
            if len(shard) >= shard_pairs:
                commit()
        if shard:
            commit()
    finally:
        files.close()
    if n_read < resumed:
        raise StageError(f"{partial}: records {resumed:,} encoded pairs but the data now has {n_read:,}; "
                         f"the source changed: delete {partial} and re-run")
    if done["pairs"] == 0:
        raise StageError(f"translation: the {split} split has no pairs to encode; check translation.data")
    names = pair_files(split)
    header = {
        "format": FORMAT, "version": VERSION, "split": split, "dtype": dtype.name, "pairs": done["pairs"],
        "source_tokens": done["source_tokens"], "target_tokens": done["target_tokens"],
        "max_source_length": max_source_length, "max_target_length": max_target_length,
        "vocab_size": vocab, "tokenizer_sha256": tokenizer_sha, "text_sha256": text_hash.hexdigest(), "plan": plan,
        "files": {k: v for k, v in names.items() if k != "header"},
        "sha256": {k: files.sha256(k) for k in ("src_ids", "src_ends", "tgt_ids", "tgt_ends")},
    }
    atomic.write_json(partial / names["header"], header)
    publish(partial, final)
    return PairFilesResult(header, resumed)


def open_or_write(pairs: Iterable[Any], *, out_dir: Path, tokenizers: Any, tokenizer_dir: Path,
                  max_source_length: int, max_target_length: int, plan: dict[str, Any],
                  on_progress: Callable[[int], None] | None = None) -> PairFiles:
    """The training pairs' files under `out_dir/pairs/`: reused when their manifest matches the
    tokenizer, lengths and plan; (re-)encoded otherwise (resuming an interrupted encoding)."""
    sha = tokenizers_sha256(tokenizer_dir)
    folder = Path(out_dir) / PAIRS_DIR
    head = folder / pair_files("train")["header"]
    if head.is_file():
        try:
            h = json.loads(head.read_text())
        except (OSError, json.JSONDecodeError):
            h = {}
        if (h.get("tokenizer_sha256") == sha and h.get("plan") == json.loads(json.dumps(plan, default=str))
                and h.get("max_source_length") == max_source_length and h.get("max_target_length") == max_target_length):
            return PairFiles.open(folder, "train", tokenizer_sha=sha)
        shutil.rmtree(folder)
    write_pair_files(pairs, out_dir=out_dir, tokenizers=tokenizers, tokenizer_sha=sha, max_source_length=max_source_length,
                     max_target_length=max_target_length, plan=plan, on_progress=on_progress)
    return PairFiles.open(folder, "train", tokenizer_sha=sha)
