"""GCIDE, the Webster-1913-based dictionary, from the Debian package `dict-gcide`.

The dictd file is plain text with light markup: `\\pro*nun"ci*a`tion\\` after the headword,
`{cross references}`, source tags such as `[1913 Webster]`, and bracketed character entities
(`[=a]`, `['e]`, `[ae]`, `[deg]`). One dictionary entry becomes one document.
"""

from __future__ import annotations

import gzip
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

# Bump when parsing changes, so a parsed copy cached by older code is not reused.
CACHE_VERSION = "v3"

DEB_PACKAGE = "dict-gcide"
DICT_PATH = "usr/share/dictd/gcide.dict.dz"

_SOURCE_TAG = re.compile(r"\[[^\]\n]*(?:Webster|WordNet|PJC|Century Dict)[^\]\n]*\]")
_PRONUNCIATION = re.compile(r"\\[^\\\n]*\\")
_XREF = re.compile(r"\{([^{}]*)\}")
_PARAGRAPH = re.compile(r"\n\s*\n")
_SPACE_PUNCT = re.compile(r" ([,.;:])")
_UNKNOWN_GLYPHS = re.compile(r"\?\?+")  # Greek/Hebrew the conversion could not represent
_ENTITY = re.compile(r"\[([^\]\s]{1,5})\]")

_NAMED = {
    "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "deg": "°", "eth": "ð", "thorn": "þ",
    "imac": "ī", "aum": "ä", "root": "√", "sect": "§", "ng": "ŋ", "th": "θ", "yogh": "ȝ",
    "add": "ă", "asl": "a", "udd": "u", "cre": "ĕ", "sharp": "♯", "flat": "♭", "frac12": "½", "frac14": "¼", "frac34": "¾",
}
# `[=a]`, `['e]`, `[a^]`, `[.a]` ...: a diacritic and a base letter; keep the letter.
_DIACRITIC = re.compile(r"^(?:[=.~\"'`^,*-]([A-Za-z]{1,2})|([A-Za-z]{1,2})[\^~])$")


def _entity(m: re.Match[str]) -> str:
    body = m.group(1)
    if body in _NAMED:
        return _NAMED[body]
    d = _DIACRITIC.match(body)
    if d:
        return d.group(1) or d.group(2)
    return m.group(0)  # a real bracket such as [Obs.] or [R.]


def raw_package() -> Path:
    return cached(
        f"raw/{DEB_PACKAGE}.deb",
        lambda tmp: apt_download(DEB_PACKAGE, tmp, source="gcide", alternative=LOCAL_TEXT_ALTERNATIVE),
    )


def strip_markup(text: str) -> str:
    """Remove tags, pronunciations and cross-reference braces; resolve character entities.

    Applied to the whole file at once: a regex pass over 40 MB is much faster than 126k calls.
    """
    text = _SOURCE_TAG.sub("", text)
    text = _PRONUNCIATION.sub("", text)
    text = _XREF.sub(r"\1", text)
    text = text.replace("{", "").replace("}", "").replace("\\", "")  # unbalanced markup in the source
    text = _ENTITY.sub(_entity, text)
    return _UNKNOWN_GLYPHS.sub("", text)


def entry_paragraphs(entry: str) -> str:
    """An entry's paragraphs, each on one line with single spaces."""
    paragraphs = []
    for block in _PARAGRAPH.split(entry):
        line = " ".join(block.split())
        if " " in line and (" ," in line or " ." in line or " ;" in line or " :" in line):
            line = _SPACE_PUNCT.sub(r"\1", line)  # left behind where a pronunciation was cut
        if line:
            paragraphs.append(line)
    return "\n".join(paragraphs)


def clean_entry(entry: str) -> str:
    """Markup-free text of one raw entry; paragraphs kept one per line."""
    return entry_paragraphs(strip_markup(entry))


def iter_entries(raw: str) -> Iterator[str]:
    """Raw entries: a headword starts at column 0 after a blank line; its body is indented."""
    for entry in re.split(r"\n\s*\n(?=\S)", raw):
        head = entry.lstrip()
        # The dictd header (00-database-*) and the license preamble are not dictionary text.
        if not head or head.startswith("00-database") or head.startswith(("Begin file", "End of file")):
            continue
        yield entry


def _documents() -> Iterator[str]:
    raw = gzip.decompress(deb_member(raw_package(), DICT_PATH, source="gcide")).decode("utf-8", "replace")
    # Skip to the first real entry: everything before is the database header and license.
    start = raw.find("\nA \\")
    for entry in iter_entries(strip_markup(raw[start:] if start > 0 else raw)):
        doc = entry_paragraphs(entry)
        if len(doc) > 20:
            yield doc


def documents_path() -> Path:
    """The parsed documents as a cached JSON-lines file (fetched and parsed once)."""
    return cached_documents(f"corpus/gcide.{CACHE_VERSION}.jsonl", _documents)


def load_gcide() -> list[str]:
    """One document per dictionary entry, markup removed."""
    return read_documents(documents_path())
