"""Everything the translation report shows, read from a run directory (missing stages are simply absent).

The files and their rows are the translation pipeline's (docs/ARCHITECTURE.md, "Translation report"):
`translation/results.json` (one training row per size), `compress/results.json` (one row per variant),
`export/results.json` (one row per exported file), `bench/results.jsonl` (one row per timing), and the
`predictions.json` each scored row points at (`{split: {sources, references, hypotheses}}`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlc_export.atomic import read_jsonl
from tlc_export.errors import StageError

FIGURE5_FILES = {"bleu-wallclock": "curves_bleu_wallclock.png", "bleu-steps": "curves_bleu_steps.png",
                 "loss-wallclock": "curves_loss_wallclock.png"}


@dataclass(frozen=True)
class SplitTranslations:
    """One split's sentences as one model translated them (what a paired test over sentences needs)."""

    sources: list[str]
    references: list[str]
    hypotheses: list[str]


@dataclass
class TranslationReportData:
    run_dir: Path
    name: str = "experiment"
    training: dict[str, Any] = field(default_factory=dict)  # translation/results.json without `models`
    models: list[dict[str, Any]] = field(default_factory=list)  # translation/results.json `models`
    variants: list[dict[str, Any]] = field(default_factory=list)  # compress/results.json rows
    exports: list[dict[str, Any]] = field(default_factory=list)  # export/results.json rows
    bench: list[dict[str, Any]] = field(default_factory=list)  # bench/results.jsonl rows
    environment: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)  # FIGURE5_FILES key -> PNG of the translation stage
    _predictions: dict[str, dict[str, SplitTranslations] | None] = field(default_factory=dict, repr=False)

    def predictions(self, rel: str | None) -> dict[str, SplitTranslations] | None:
        """A row's `predictions` file (run-relative), read once; None when absent (no paired test for that row)."""
        if not rel:
            return None
        if rel not in self._predictions:
            self._predictions[rel] = load_translations(self.run_dir / rel)
        return self._predictions[rel]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StageError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); rerun the stage that writes it "
                         "(delete the file first)") from e


def _rows(path: Path, key: str | None = None) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    data = _json(path)
    rows = data.get(key, []) if isinstance(data, dict) and key else data
    if not isinstance(rows, list):
        raise StageError(f"{path}: expected a list of rows{f' under {key!r}' if key else ''}, got {type(rows).__name__}; "
                         "rerun the stage that writes it")
    return [r for r in rows if isinstance(r, dict)]


def _require(rows: list[dict[str, Any]], path: Path, fields: tuple[str, ...]) -> None:
    for i, r in enumerate(rows):
        missing = [f for f in fields if f not in r]
        if missing:
            raise StageError(f"{path}: row {i} has no {', '.join(repr(m) for m in missing)}; rerun the stage that writes "
                             "it with this version of tlc")


def load_translations(path: Path) -> dict[str, SplitTranslations] | None:
    """`{split: SplitTranslations}` from a predictions.json; None when the file is missing."""
    if not path.is_file():
        return None
    data = _json(path)
    out = {}
    for split, p in (data.items() if isinstance(data, dict) else []):
        try:
            out[split] = SplitTranslations(list(p["sources"]), list(p["references"]), list(p["hypotheses"]))
        except (KeyError, TypeError) as e:
            raise StageError(f"{path}: split {split!r} needs `sources`, `references` and `hypotheses` lists ({e}); "
                             "rerun the stage that writes it") from e
        if not (len(out[split].sources) == len(out[split].references) == len(out[split].hypotheses)):
            raise StageError(f"{path}: split {split!r} has sources, references and hypotheses of different lengths; "
                             "rerun the stage that writes it")
    return out


def load_translation_report_data(run_dir: str | Path, name: str = "experiment") -> TranslationReportData:
    root = Path(run_dir)
    d = TranslationReportData(run_dir=root, name=name)
    tr = root / "translation" / "results.json"
    if tr.is_file():
        meta = _json(tr)
        if not isinstance(meta, dict):
            raise StageError(f"{tr}: expected an object with `models`; rerun the translation stage")
        d.models = _rows(tr, "models")
        _require(d.models, tr, ("model", "dev_bleu", "test_bleu"))
        d.training = {k: v for k, v in meta.items() if k != "models"}
    for key, fname in FIGURE5_FILES.items():
        png = root / "translation" / fname
        if png.is_file():
            d.figures[key] = png.read_bytes()
    cr = root / "compress" / "results.json"
    d.variants = _rows(cr, "variants")
    _require(d.variants, cr, ("variant", "model", "storage_bytes"))
    er = root / "export" / "results.json"
    d.exports = _rows(er, "artifacts")
    _require(d.exports, er, ("variant", "format"))
    br = root / "bench" / "results.jsonl"
    d.bench = read_jsonl(br) if br.is_file() else _rows(root / "bench" / "results.json")
    _require(d.bench, br, ("variant", "backend"))
    for i, r in enumerate(d.bench):
        if r.get("batch_size", r.get("batch")) is None:
            raise StageError(f"{br}: row {i} has no 'batch_size'; rerun the bench stage with this version of tlc")
    env = root / "bench" / "environment.json"
    if env.is_file():
        d.environment = _json(env)
    return d
