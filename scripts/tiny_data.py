"""Write the tiny synthetic corpus and task that recipes/tiny/*.yaml read (and the tests use).

    python scripts/tiny_data.py recipes/tiny/data

`corpus/doc*.txt`: 40 documents of filler and polarity words; `task.csv`: 500 short sentences whose
label is the polarity word's. Deterministic (seeded), a few hundred kilobytes, seconds to train on.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

POS = ["great", "wonderful", "moving", "brilliant", "funny", "charming"]
NEG = ["awful", "boring", "dull", "clumsy", "tedious", "bland"]
FILLER = ["the", "film", "story", "actors", "plot", "music", "was", "really", "quite", "and", "a", "its"]


def write_tiny_data(root: Path, documents: int = 40, examples: int = 500) -> None:
    rng = random.Random(0)
    docs = root / "corpus"
    docs.mkdir(parents=True, exist_ok=True)
    for i in range(documents):
        paras = []
        for _ in range(6):
            words = [rng.choice(FILLER + POS + NEG) for _ in range(rng.randint(12, 30))]
            paras.append(" ".join(words).capitalize() + ".")
        (docs / f"doc{i:02d}.txt").write_text("\n\n".join(paras))
    with open(root / "task.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(examples):
            label = i % 2
            cue = rng.choice(POS if label else NEG)
            words = [rng.choice(FILLER) for _ in range(rng.randint(4, 10))]
            words.insert(rng.randrange(len(words) + 1), cue)
            w.writerow([" ".join(words), "pos" if label else "neg"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python scripts/tiny_data.py",
        description="Write the tiny synthetic corpus (FOLDER/corpus/doc*.txt) and sentiment task (FOLDER/task.csv) "
        "that recipes/tiny/*.yaml read.")
    parser.add_argument("folder", type=Path, help="where to write them, e.g. recipes/tiny/data")
    args = parser.parse_args(argv)
    if str(args.folder).startswith("-"):
        parser.error(f"{args.folder}: not an option and not a sensible folder name")
    write_tiny_data(args.folder)
    print(f"wrote {args.folder}/corpus/*.txt and {args.folder}/task.csv")


if __name__ == "__main__":
    main()
