"""Hugging Face `datasets` as a stream of rows: hub datasets (streaming or memory-mapped Arrow),
folders written by `save_to_disk`, and builders such as 'json' or 'parquet' over local files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tlc_export.config.data import TextSource
from tlc_export.errors import DataSourceError

_ROWS_PER_READ = 512  # rows fetched per Arrow read; bounded, so memory does not grow with the dataset


def import_datasets(what: str) -> Any:
    try:
        import datasets  # optional dependency (`tlc-export[hf]`), imported only when used
    except ImportError:
        raise DataSourceError(
            f"{what}: the `datasets` package is not installed; `pip install 'tlc-export[hf]'`, or "
            "export the data to local csv/jsonl files and use `kind: csv` / `kind: jsonl`"
        ) from None
    return datasets


def local_dataset_dir(name: str, base_dir: Path) -> Path | None:
    p = Path(name).expanduser()
    p = p if p.is_absolute() else base_dir / p
    if p.is_dir() and ((p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file()):
        return p
    return None


def _data_files(src: TextSource, base_dir: Path) -> str | list[str] | None:
    if src.data_files is None:
        return None

    def resolve(f: str) -> str:
        p = Path(f).expanduser()
        return str(p if p.is_absolute() or "://" in f else base_dir / p)

    return resolve(src.data_files) if isinstance(src.data_files, str) else [resolve(f) for f in src.data_files]


def open_dataset(src: TextSource, base_dir: Path, field: str) -> Any:
    """The split as a `datasets.Dataset` (memory-mapped Arrow) or `IterableDataset` (streaming)."""
    datasets = import_datasets(f"{field}: hf dataset '{src.name}'")
    name = src.name or ""
    local = local_dataset_dir(name, base_dir)
    try:
        if local is not None:
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if src.split not in ds:
                    raise DataSourceError(
                        f"{field}.split: {local} has splits {sorted(ds)}, not '{src.split}'; set `split`"
                    )
                ds = ds[src.split]
            return ds
        return datasets.load_dataset(
            name, src.config, split=src.split, data_files=_data_files(src, base_dir), streaming=src.streaming
        )
    except DataSourceError:
        raise
    except Exception as exc:  # the hub raises many types: connection, auth, missing config or split
        raise DataSourceError(
            f"{field}: hf dataset '{name}' (config {src.config!r}, split {src.split!r}) could not be opened: "
            f"{type(exc).__name__}: {exc}. Check the name and access to the Hugging Face hub, or point "
            "`name` at a `save_to_disk` folder, or use local csv/jsonl files"
        ) from None


def iter_hf_rows(src: TextSource, base_dir: Path, field: str) -> Iterator[dict[str, Any]]:
    """Rows of the split with only the text (and id) columns, read a bounded batch at a time."""
    ds = open_dataset(src, base_dir, field)
    wanted = [c for c in (src.column, src.id_column) if c]
    columns = getattr(ds, "column_names", None)
    if columns is not None:
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise DataSourceError(
                f"{field}: hf dataset '{src.name}' has no column {missing[0]!r} (has {sorted(columns)}); "
                f"set `{field}.column` / `{field}.id_column`"
            )
        if hasattr(ds, "select_columns"):
            ds = ds.select_columns(wanted)
    if not hasattr(ds, "iter"):  # a plain iterable (older versions, tests)
        yield from ds
        return
    for batch in ds.iter(batch_size=_ROWS_PER_READ):
        keys = list(batch)
        for values in zip(*(batch[k] for k in keys), strict=True):
            yield dict(zip(keys, values, strict=True))


def hf_size_bytes(src: TextSource, base_dir: Path) -> int | None:
    """The split's size from the dataset's metadata, when it declares one (for progress and ETA)."""
    try:
        local = local_dataset_dir(src.name or "", base_dir)
        if local is not None:
            return sum(f.stat().st_size for f in local.rglob("*.arrow")) or None
        datasets = import_datasets("hf size")
        builder = datasets.load_dataset_builder(src.name, src.config, data_files=_data_files(src, base_dir))
        split = (builder.info.splits or {}).get(src.split)
        return int(split.num_bytes) if split is not None and split.num_bytes else None
    except Exception:  # metadata is optional: no ETA then, the data itself is unaffected
        return None
