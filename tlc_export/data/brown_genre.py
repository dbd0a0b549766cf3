"""Fiction vs non-fiction on the Brown corpus: a built-in task that a small model learns on 2 cores.

The Brown corpus labels each of its 500 texts with a genre; categories k–r (general, mystery,
science and adventure fiction, romance, humour: texts 374–499 in archive order) are fiction,
categories a–j (press, religion, skills, popular lore, belles lettres, government, learned) are not.
An example is three consecutive sentences of one text, labelled with its text's genre.

Texts, not sentences, are split between train, dev and test (stratified by genre, ordered by a
stable hash of the file name), so no text contributes to two splits; and the texts of dev and test
are removed from the pretraining corpus when it reads Brown (`heldout_positions`), so the model is
never pretrained on the sentences it is scored on. The data stage checks that with hashed n-grams.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass

from tlc_export.atomic import write_text
from tlc_export.data.fetch import cached

# Bump when the chunking or labelling changes, so a copy cached by older code is not reused.
CACHE_VERSION = "v1"
CHUNK_SENTENCES = 3
FICTION_CATEGORIES = frozenset("klmnpr")
LABEL_NAMES = ["nonfiction", "fiction"]


@dataclass(frozen=True)
class GenreRow:
    position: int  # the text's index in archive order: the pretraining corpus's document position
    document: str  # file name, e.g. 'ck01'
    text: str
    label: int


def genre_label(document: str) -> int:
    """1 (fiction) for categories k–r, 0 otherwise; from the file name `c<category><number>`."""
    return int(document[1] in FICTION_CATEGORIES)


def _build(tmp: object) -> None:
    from tlc_export.data.brown import detokenize, iter_files, raw_package

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["position", "document", "text", "label"])
    for position, (name, sentences) in enumerate(iter_files(raw_package())):
        for start in range(0, len(sentences) - CHUNK_SENTENCES + 1, CHUNK_SENTENCES):
            tokens = [tok for s in sentences[start:start + CHUNK_SENTENCES] for tok in s]
            w.writerow([position, name, detokenize(tokens), genre_label(name)])
    write_text(tmp, buf.getvalue())  # type: ignore[arg-type]


def load_brown_genre() -> list[GenreRow]:
    """Every three-sentence chunk of every Brown text (cached as CSV once)."""
    path = cached(f"tasks/brown-genre.{CACHE_VERSION}.csv", _build)
    with open(path, encoding="utf-8", newline="") as f:
        return [GenreRow(int(r["position"]), r["document"], r["text"], int(r["label"])) for r in csv.DictReader(f)]


def _doc_hash(document: str) -> float:
    return int(hashlib.sha1(f"brown-genre:{document}".encode()).hexdigest()[:12], 16) / 16**12


def split_documents(documents: dict[str, int], dev_fraction: float, test_fraction: float) -> dict[str, str]:
    """{document: 'train' | 'dev' | 'test'}: within each label, documents ordered by a stable hash; the
    first round(test_fraction · n) go to test, the next round(dev_fraction · n) to dev (at least one
    each), the rest to train. `documents` maps a document name to its label."""
    out: dict[str, str] = {}
    for label in sorted(set(documents.values())):
        docs = sorted((d for d, lab in documents.items() if lab == label), key=lambda d: (_doc_hash(d), d))
        n_test = max(1, round(test_fraction * len(docs)))
        n_dev = max(1, round(dev_fraction * len(docs)))
        for i, d in enumerate(docs):
            out[d] = "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
    return out


def split_rows(rows: list[GenreRow], dev_fraction: float,
               test_fraction: float) -> tuple[dict[str, list[GenreRow]], dict[str, str]]:
    """The rows of each split, and the split of each document."""
    docs = {r.document: r.label for r in rows}
    where = split_documents(docs, dev_fraction, test_fraction)
    out: dict[str, list[GenreRow]] = {"train": [], "dev": [], "test": []}
    for r in rows:
        out[where[r.document]].append(r)
    return out, where


def heldout_positions(dev_fraction: float, test_fraction: float) -> frozenset[int]:
    """Archive positions of the Brown texts in dev or test: the pretraining corpus leaves them out."""
    rows = load_brown_genre()
    _, where = split_rows(rows, dev_fraction, test_fraction)
    return frozenset(r.position for r in rows if where[r.document] != "train")
