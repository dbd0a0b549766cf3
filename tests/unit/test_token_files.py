"""Token files: round trip, byte-identical for any worker count, resume after kill -9, uint16/uint32,
and memory-mapped packing shared by several ranks."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from tlc_export.config.data import TokenizerConfig
from tlc_export.data.mlm import MLMBatches, PackedRows, pack_sequences
from tlc_export.data.shards import PROGRESS_FILE
from tlc_export.data.sources import Document
from tlc_export.data.split import SplitRouter, fraction_hash, val_score
from tlc_export.data.token_files import TOKENS_DIR, TokenSplit, token_dtype
from tlc_export.data.token_writer import (
    PARTIAL_DIR,
    TokenFilesResult,
    write_token_files,
)
from tlc_export.data.tokenizer import EOS_ID, train_tokenizer
from tlc_export.errors import StageError

WORDS = ["river", "stone", "light", "quiet", "runs", "falls", "over", "the", "old", "mill", "and", "a",
         "bright", "morning", "Paris", "1913", "can't", "it's", "över", "日本"]
FRACTION, MIN_VAL = 0.1, 3
LABELS = ["fiction", "news"]


def _documents() -> list[Document]:
    rng = random.Random(0)
    docs = []
    for source, n in ((0, 120), (1, 60)):
        for pos in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))).capitalize() + "."
            docs.append(Document(source, pos, str(pos), text))
    return docs


DOCS = _documents()


def _score(doc: Document) -> float:
    return val_score(0, LABELS[doc.source], doc.key)


def _frac_hash(doc: Document) -> int:
    return fraction_hash(0, LABELS[doc.source], doc.key)


def _reference_hash(doc: Document) -> int:
    """The documented formula, written out: blake2b-64 of (seed, "fraction", source, key), big-endian."""
    raw = f"0\x1ffraction\x1f{LABELS[doc.source]}\x1f{doc.key}".encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mp_ = pytest.MonkeyPatch()
    mp_.setenv("TLC_HOME", str(tmp_path_factory.mktemp("home")))
    out = tmp_path_factory.mktemp("data") / "tokenizer"
    train_tokenizer([d.text for d in DOCS], TokenizerConfig(vocab_size=400), out, model_max_length=32)
    mp_.undo()
    return out


def _write(out: Path, tok_dir: Path, workers: int, vocab_size: int = 400, **kw: object) -> TokenFilesResult:
    return write_token_files(
        iter(DOCS), score=_score, fraction_hash=_frac_hash, router=SplitRouter(FRACTION, MIN_VAL), out_dir=out, tokenizer_dir=tok_dir,
        vocab_size=vocab_size, eos_id=EOS_ID, source_labels=LABELS, plan={"test": 1}, workers=workers,
        shard_bytes=1024, **kw,  # ~20 shards: several per worker, and something to resume
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip_and_identical_with_one_and_two_workers(tmp_path: Path, tok_dir: Path) -> None:
    r1 = _write(tmp_path / "w1", tok_dir, workers=1)
    r2 = _write(tmp_path / "w2", tok_dir, workers=2)
    one, two = _files(tmp_path / "w1" / TOKENS_DIR), _files(tmp_path / "w2" / TOKENS_DIR)
    assert set(one) == {f"{s}.{e}" for s in ("train", "val") for e in ("bin", "idx", "src", "frac", "json")}
    assert one == two  # byte for byte, headers included
    assert r1.text_sha256 == r2.text_sha256 and not (tmp_path / "w1" / PARTIAL_DIR).exists()

    # Reference, built without the writer: the hash split by hand, plain `tokenizers` encoding.
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    hashed = [d for d in DOCS if _score(d) < FRACTION]
    rest = sorted((d for d in DOCS if _score(d) >= FRACTION), key=_score)
    expected_val = {(d.source, d.position) for d in hashed + rest[: max(0, MIN_VAL - len(hashed))]}
    seen: set[tuple[int, int]] = set()
    for split in ("train", "val"):
        folder = tmp_path / "w1" / TOKENS_DIR
        header = json.loads((folder / f"{split}.json").read_text())
        assert header["dtype"] == "uint16" and header["vocab_size"] == 400
        ids = np.fromfile(folder / f"{split}.bin", dtype="<u2")
        ends = np.fromfile(folder / f"{split}.idx", dtype="<u8")
        srcs = np.fromfile(folder / f"{split}.src", dtype="<u2")
        hashes = np.fromfile(folder / f"{split}.frac", dtype="<u8")
        assert header["tokens"] == len(ids) == ends[-1] and header["documents"] == len(ends) == len(srcs) == len(hashes)
        for key, name in (("tokens", "bin"), ("document_ends", "idx"), ("document_sources", "src"),
                          ("document_hashes", "frac")):
            assert header["sha256"][key] == hashlib.sha256((folder / f"{split}.{name}").read_bytes()).hexdigest()
        # Each document decodes to exactly one input document of the right source and split.
        by_ids = {(d.source, tuple(tok.encode(d.text, add_special_tokens=False).ids) + (EOS_ID,)): d for d in DOCS}
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        for s, e, src, h in zip(starts, ends.astype(np.int64), srcs, hashes, strict=True):
            doc = by_ids[(int(src), tuple(ids[s:e].tolist()))]
            assert int(h) == _reference_hash(doc)
            assert ((doc.source, doc.position) in expected_val) == (split == "val")
            seen.add((doc.source, doc.position))
        assert [x["documents"] for x in header["sources"]] == [int((srcs == i).sum()) for i in range(2)]
        mapped = TokenSplit.open(folder, split)
        assert isinstance(mapped.ids, np.memmap) and np.array_equal(mapped.ids, ids)
    assert len(seen) == len(DOCS)  # every document written once, none lost


def test_dtype_follows_the_vocabulary_size(tmp_path: Path, tok_dir: Path) -> None:
    assert token_dtype(300) == np.uint16 and token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32 and token_dtype(262_144) == np.uint32
    _write(tmp_path / "small", tok_dir, workers=1)
    _write(tmp_path / "large", tok_dir, workers=1, vocab_size=70_000)  # ids would not fit in uint16
    small = TokenSplit.open(tmp_path / "small" / TOKENS_DIR, "train")
    large = TokenSplit.open(tmp_path / "large" / TOKENS_DIR, "train")
    assert large.header["dtype"] == "uint32" and large.ids.dtype == np.uint32
    assert (tmp_path / "large" / TOKENS_DIR / "train.bin").stat().st_size == 4 * len(small.ids)
    assert np.array_equal(large.ids, small.ids)


def _killed_run(out: str, tok: str) -> None:
    commits: list[str] = []

    def die_after_three(split: str, shard: int) -> None:
        commits.append(split)
        if len(commits) == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-way, right after a shard was made durable

    _write(Path(out), Path(tok), workers=2, on_commit=die_after_three)


def test_resume_after_kill_gives_identical_files(tmp_path: Path, tok_dir: Path) -> None:
    _write(tmp_path / "reference", tok_dir, workers=1)
    child = mp.get_context("fork").Process(target=_killed_run, args=(str(tmp_path / "run"), str(tok_dir)))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    partial = tmp_path / "run" / PARTIAL_DIR
    progress = json.loads((partial / PROGRESS_FILE).read_text())
    assert sum(s["shards"] for s in progress["splits"].values()) == 3
    assert not (tmp_path / "run" / TOKENS_DIR).exists()  # nothing published half-done
    with open(partial / "train.bin", "ab") as f:
        f.write(b"\x07" * 101)  # bytes of a shard whose record never made it: must be cut

    commits: list[str] = []
    result = _write(tmp_path / "run", tok_dir, workers=1, on_commit=lambda s, n: commits.append(s))
    assert result.resumed_shards == 3
    total = sum(h["documents"] for h in result.headers.values())
    assert total == len(DOCS) and len(commits) > 0
    assert _files(tmp_path / "run" / TOKENS_DIR) == _files(tmp_path / "reference" / TOKENS_DIR)


def test_reader_rejects_truncated_files_and_another_tokenizer(tmp_path: Path, tok_dir: Path) -> None:
    _write(tmp_path, tok_dir, workers=1)
    folder = tmp_path / TOKENS_DIR
    with pytest.raises(StageError, match=r"tokenizer_sha256.*--force data"):
        TokenSplit.open(folder, "val", tokenizer_sha="0" * 64)
    with open(folder / "val.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(StageError, match=r"val\.bin: 10 bytes, but val\.json says"):
        TokenSplit.open(folder, "val")


def _rank_batches(path: str, rank: int, world: int, q: mp.Queue) -> None:
    split = TokenSplit.open(Path(path), "train")
    rows = PackedRows(split.ids, 16, 0, EOS_ID)
    batches = MLMBatches(rows, batch_size=6, seed=5, start=4)
    # Each rank draws the same global batch and keeps rows[rank::world], as TrainStep does.
    q.put((rank, isinstance(split.ids, np.memmap), [batches.next_batch()[rank::world].numpy() for _ in range(4)]))


def test_two_ranks_pack_the_same_rows_from_one_memmap(tmp_path: Path, tok_dir: Path) -> None:
    _write(tmp_path, tok_dir, workers=1)
    folder = tmp_path / TOKENS_DIR
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_rank_batches, args=(str(folder), r, 2, q)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict((r, (mapped, b)) for r, mapped, b in (q.get(timeout=60) for _ in procs))
    for p in procs:
        p.join(30)
    assert all(got[r][0] for r in range(2))  # both mapped the file, neither loaded a copy

    # One process, in memory, with the original reshape-based packing as the reference.
    flat = np.fromfile(folder / "train.bin", dtype="<u2")
    reference = MLMBatches(pack_sequences(flat, 16, 0, EOS_ID), batch_size=6, seed=5, start=4)
    for step in range(4):
        whole = reference.next_batch().numpy()
        assert np.array_equal(got[0][1][step], whole[0::2]) and np.array_equal(got[1][1][step], whole[1::2])


def test_packed_rows_match_pack_sequences() -> None:
    ids = np.arange(10, 10 + 1_000, dtype=np.uint16)
    rows = PackedRows(ids, 32, 0, 2)
    ref = pack_sequences(ids, 32, 0, 2)
    assert rows.shape == ref.shape and len(rows) == len(ref)
    assert np.array_equal(rows[:], ref) and np.array_equal(rows[np.array([3, 0, 32])], ref[[3, 0, 32]])
    assert np.array_equal(rows[5], ref[5]) and np.array_equal(rows[-1], ref[-1])
    with pytest.raises(IndexError):
        rows[np.array([len(ref)])]
    assert torch.equal(MLMBatches(rows, 4, seed=1).next_batch(), MLMBatches(ref, 4, seed=1).next_batch())


def test_token_files_are_hashed_as_written_not_read_again(tmp_path: Path, tok_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tlc_export import integrity

    _write(tmp_path / "w", tok_dir, workers=1)
    folder = tmp_path / "w" / TOKENS_DIR
    real = integrity.sha256_file

    def no_token_file(path, *a, **kw):  # the stage's record must take the writer's streamed digests
        assert not str(path).endswith((".bin", ".idx", ".src", ".frac")), path
        return real(path, *a, **kw)

    monkeypatch.setattr(integrity, "sha256_file", no_token_file)
    files = integrity.hash_folder(folder)
    for name in ("train.bin", "train.idx", "train.src", "train.frac", "val.bin", "val.idx", "val.src", "val.frac"):
        assert files[name] == {"sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
                               "bytes": (folder / name).stat().st_size}
