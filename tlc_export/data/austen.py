"""Jane Austen's six novels from the Debian package `r-cran-janeaustenr` (R lazy-load data)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from tlc_export.data.fetch import (
    LOCAL_TEXT_ALTERNATIVE,
    apt_download,
    cached,
    cached_documents,
    deb_member,
    read_documents,
)
from tlc_export.data.rdata import STRSXP, VECSXP, RObject, lazyload_database
from tlc_export.errors import DataSourceError

# Bump when parsing changes, so a parsed copy cached by older code is not reused.
CACHE_VERSION = "v1"

DEB_PACKAGE = "r-cran-janeaustenr"
DATA_DIR = "usr/lib/R/site-library/janeaustenr/data"
NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
_ITALICS = re.compile(r"(?<!\w)_([^_]+)_(?!\w)")  # Project Gutenberg marks italics as _word_


def raw_package() -> Path:
    return cached(
        f"raw/{DEB_PACKAGE}.deb",
        lambda tmp: apt_download(DEB_PACKAGE, tmp, source="austen", alternative=LOCAL_TEXT_ALTERNATIVE),
    )


def novel_lines(obj: RObject, name: str) -> list[str]:
    """Lines of a novel stored either as a character vector or a data frame with a `text` column."""
    if obj.type == VECSXP and "text" in (obj.names or []):
        obj = obj["text"]
    if not isinstance(obj, RObject) or obj.type != STRSXP:
        raise DataSourceError(f"data source 'austen': object '{name}' is neither text nor a data frame with a `text` column")
    return [s or "" for s in obj.value]


def paragraphs(lines: list[str]) -> Iterator[str]:
    """Blank-line separated blocks joined into single lines, italics markers removed."""
    block: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            block.append(line.strip())
        elif block:
            yield _ITALICS.sub(r"\1", " ".join(block))
            block = []


def load_novels() -> dict[str, list[str]]:
    """Each novel's lines, read straight from the package's R data base."""
    deb = raw_package()
    db = lazyload_database(
        deb_member(deb, f"{DATA_DIR}/Rdata.rdx", source="austen"),
        deb_member(deb, f"{DATA_DIR}/Rdata.rdb", source="austen"),
    )
    missing = [n for n in NOVELS if n not in db]
    if missing:
        raise DataSourceError(f"data source 'austen': {DEB_PACKAGE} lacks {missing}; found {sorted(db)}")
    return {name: novel_lines(db[name], name) for name in NOVELS}


def _documents() -> Iterator[str]:
    for lines in load_novels().values():
        yield from paragraphs(lines)


def documents_path() -> Path:
    """The parsed documents as a cached JSON-lines file (fetched and parsed once)."""
    return cached_documents(f"corpus/austen.{CACHE_VERSION}.jsonl", _documents)


def load_austen() -> list[str]:
    """One document per paragraph of the six novels, in publication order."""
    return read_documents(documents_path())
