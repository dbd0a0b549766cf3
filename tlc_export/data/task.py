"""The downstream classification task: examples, labels and a stable train/dev/test split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tlc_export.config.finetune import TaskConfig
from tlc_export.data.local import load_hf_rows, read_rows, require_columns
from tlc_export.errors import DataSourceError


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    text_pair: str | None = None


@dataclass
class TaskData:
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    num_labels: int
    label_names: list[str] = field(default_factory=list)
    # How dev and test were kept apart from train: 'example' (hash of the text) or 'document'.
    split_unit: str = "example"
    documents: dict[str, int] = field(default_factory=dict)  # split -> documents, for a split by document

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}


def _unit_hash(key: str) -> float:
    """A stable number in [0, 1) from text: sha1, so splits never change across runs or machines."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / 16**12


def _key(e: Example) -> str:
    return e.text if e.text_pair is None else f"{e.text}\t{e.text_pair}"


def split_examples(
    examples: list[Example], dev_fraction: float, test_fraction: float
) -> tuple[list[Example], list[Example], list[Example]]:
    """Assign each example by the hash of its text, so duplicates never straddle two splits."""
    train: list[Example] = []
    dev: list[Example] = []
    test: list[Example] = []
    for e in examples:
        u = _unit_hash(_key(e))
        (test if u < test_fraction else dev if u < test_fraction + dev_fraction else train).append(e)
    return train, dev, test


def cap_examples(examples: list[Example], limit: int | None) -> list[Example]:
    """Keep `limit` examples chosen by a second hash (a fixed random subset), in their order."""
    if limit is None or len(examples) <= limit:
        return examples
    ranked = sorted(range(len(examples)), key=lambda i: _unit_hash("cap:" + _key(examples[i])))
    keep = set(ranked[:limit])
    return [e for i, e in enumerate(examples) if i in keep]


def encode_labels(raw: list[Any], where: str) -> tuple[list[int], list[str]]:
    """Integer labels 0..K-1 stay as they are; anything else maps to ints in sorted order."""
    values = [str(v).strip() if not isinstance(v, int) else v for v in raw]
    try:
        ints = [int(v) for v in values]
    except (TypeError, ValueError):
        ints = None
    if ints is not None and set(ints) == set(range(max(ints) + 1)):
        return ints, [str(i) for i in range(max(ints) + 1)]
    keys = ints if ints is not None else [str(v) for v in values]
    names = sorted(set(keys))
    if len(names) < 2:
        raise DataSourceError(f"{where}: the label column has a single value {names}; a classifier needs two or more")
    index = {n: i for i, n in enumerate(names)}
    return [index[k] for k in keys], [str(n) for n in names]


def _examples_from_rows(rows: list[dict[str, Any]], cfg: TaskConfig, where: str) -> tuple[list[Example], list[str]]:
    columns = {"finetune.task.text_column": cfg.text_column, "finetune.task.label_column": cfg.label_column}
    if cfg.text_pair_column:
        columns["finetune.task.text_pair_column"] = cfg.text_pair_column
    require_columns(rows, columns, where)
    kept = []
    for i, r in enumerate(rows):
        label = r.get(cfg.label_column)
        if label is None or label == "" or (isinstance(label, int) and label < 0):
            continue  # unlabelled rows (e.g. hidden test labels written as -1)
        text = r.get(cfg.text_column)
        if text is None or not str(text).strip():
            raise DataSourceError(f"{where}: row {i + 1} has an empty '{cfg.text_column}'; remove it or fill it in")
        kept.append(r)
    labels, names = encode_labels([r[cfg.label_column] for r in kept], where)
    examples = [
        Example(
            text=str(r[cfg.text_column]).strip(),
            label=lab,
            text_pair=str(r[cfg.text_pair_column]).strip() if cfg.text_pair_column else None,
        )
        for r, lab in zip(kept, labels, strict=True)
    ]
    return examples, names


def _brown_genre(task_cfg: TaskConfig) -> TaskData:
    """Split by Brown text (`tlc_export.data.brown_genre`): no text gives examples to two splits."""
    from tlc_export.data.brown_genre import LABEL_NAMES, load_brown_genre, split_rows

    parts, where = split_rows(load_brown_genre(), task_cfg.dev_fraction, task_cfg.test_fraction)
    train, dev, test = ([Example(r.text, r.label) for r in parts[s]] for s in ("train", "dev", "test"))
    train = cap_examples(train, task_cfg.max_train_examples)
    dev, test = (cap_examples(x, task_cfg.max_eval_examples) for x in (dev, test))
    docs = {s: sum(1 for w in where.values() if w == s) for s in ("train", "dev", "test")}
    return TaskData(train=train, dev=dev, test=test, num_labels=len(LABEL_NAMES), label_names=list(LABEL_NAMES),
                    split_unit="document", documents=docs)


class PathResolver(Protocol):
    """Where a relative task path points: the recipe (`Recipe.resolve_path`), or recipe validation's stand-in
    (the task reader sits below the recipe, which checks task files with it)."""

    def resolve_path(self, p: str) -> Path: ...


def load_task(task_cfg: TaskConfig, recipe: PathResolver) -> TaskData:
    """The task's examples split into train/dev/test by a stable hash of the text."""
    if task_cfg.kind == "brown-genre":
        return _brown_genre(task_cfg)
    if task_cfg.kind == "rt-polarity":
        from tlc_export.data.rt_polarity import LABEL_NAMES, load_rt_polarity

        examples = [Example(text, label) for text, label in load_rt_polarity()]
        names = list(LABEL_NAMES)
    elif task_cfg.kind in ("csv", "jsonl"):
        path = recipe.resolve_path(task_cfg.path or "")
        examples, names = _examples_from_rows(read_rows(path, task_cfg.kind), task_cfg, str(path))
    elif task_cfg.kind == "hf":
        # Only the `train` split: public test splits often hide labels; we split it ourselves.
        rows = load_hf_rows(task_cfg.name or "", task_cfg.config, "train")
        examples, names = _examples_from_rows(rows, task_cfg, f"hf dataset '{task_cfg.name}'")
    else:
        raise DataSourceError(f"finetune.task.kind: unknown task kind '{task_cfg.kind}'")
    train, dev, test = split_examples(examples, task_cfg.dev_fraction, task_cfg.test_fraction)
    train = cap_examples(train, task_cfg.max_train_examples)
    dev, test = (cap_examples(x, task_cfg.max_eval_examples) for x in (dev, test))
    if not (train and dev and test):
        raise DataSourceError(
            f"finetune.task: {len(examples)} examples give an empty split (train {len(train)}, dev "
            f"{len(dev)}, test {len(test)}); add examples or raise dev_fraction/test_fraction"
        )
    return TaskData(train=train, dev=dev, test=test, num_labels=len(names), label_names=names)
