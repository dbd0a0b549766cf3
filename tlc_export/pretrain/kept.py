"""Intermediate checkpoints (`pretrain.keep_checkpoints_at`): loadable HF checkpoints kept at fractions
of the training budget, each evaluated on the validation sample when it was kept.

`pretrain/<size>/kept/<tag>/` holds `save_pretrained` weights, the tokenizer and `kept.json`
({tag, fraction, elapsed_s, step, tokens, epochs, flops_paper, val_loss, val_ppl, checkpoint}); the
tag is the fraction in percent (`k25`, `k12p5`). Fraction 1.0 is the final checkpoint
(`pretrain/<size>/checkpoint/`) and is not copied. Kept folders live outside the resumable state,
so they survive a resume; a fraction whose folder exists is not kept again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tlc_export.atomic import atomic_path

KEPT_DIR = "kept"
KEPT_FILE = "kept.json"
FINAL_TAG = "final"


def kept_tag(fraction: float) -> str:
    """`k25` for 0.25, `k12p5` for 0.125, `k100` for 1.0: the fraction of the budget in percent."""
    pct = f"{round(fraction * 100, 6):g}".replace(".", "p")
    return f"k{pct}"


def kept_path(size_dir: Path, fraction: float) -> Path:
    return Path(size_dir) / KEPT_DIR / kept_tag(fraction)


def is_kept(size_dir: Path, fraction: float) -> bool:
    return (kept_path(size_dir, fraction) / KEPT_FILE).is_file()


def save_kept(size_dir: Path, fraction: float, model: Any, tokenizer: Any, record: dict[str, Any]) -> dict[str, Any]:
    """Write one kept checkpoint atomically; returns its kept.json record."""
    tag = kept_tag(fraction)
    rec = {"tag": tag, "fraction": fraction, **record, "checkpoint": f"{Path(size_dir).name}/{KEPT_DIR}/{tag}"}
    with atomic_path(kept_path(size_dir, fraction)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / KEPT_FILE).write_text(json.dumps(rec, indent=2) + "\n")
    return rec


def read_kept(size_dir: Path) -> list[dict[str, Any]]:
    """Every kept checkpoint of a size (fractions < 1), earliest first."""
    folder = Path(size_dir) / KEPT_DIR
    out = []
    for f in sorted(folder.glob(f"*/{KEPT_FILE}")) if folder.is_dir() else []:
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return sorted(out, key=lambda r: (float(r.get("elapsed_s") or 0.0), float(r.get("fraction") or 0.0)))
