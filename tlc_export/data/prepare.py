"""`tlc data prepare`: fetch and check every source a recipe needs, ahead of a run.

Cheap on purpose: built-ins are fetched and parsed into $TLC_HOME once, local files are only
listed, a Hugging Face source is opened and its first row read. The corpus is never loaded; the
token files are written by the data stage (which `tlc data prepare` runs next, unless told not to).
"""

from __future__ import annotations

from tlc_export.data.fetch import tlc_home
from tlc_export.data.local import resolve_glob
from tlc_export.data.sources import builtin_documents_path, iter_source
from tlc_export.data.task import load_task
from tlc_export.recipe import Recipe


def prepare_data(recipe: Recipe) -> dict[str, str]:
    """Fetch (once) or check each corpus source and the finetune task; describe what is there.

    Returns {what: one-line description}. Raises DataSourceError for a source that cannot be
    fetched or opened, naming the local-file alternative.
    """
    info: dict[str, str] = {}
    for i, src in enumerate(recipe.data.sources):
        what = f"data.sources[{i}] ({src.label})"
        if src.kind in ("brown", "gcide", "austen"):
            path = builtin_documents_path(src.kind)()
            with open(path, "rb") as f:
                n = sum(1 for _ in f)
            info[what] = f"{n:,} documents, {path.stat().st_size / 1e6:.1f} MB parsed"
        elif src.kind in ("text", "csv", "jsonl"):
            files = resolve_glob(src.path or "", recipe.base_dir, field=f"data.sources[{i}].path")
            size = sum(f.stat().st_size for f in files)
            info[what] = f"{len(files):,} file(s), {size / 1e6:.1f} MB"
        else:
            first = next(iter_source(src, recipe, i))
            info[what] = f"reachable; first document {len(first.text):,} characters"
    if recipe.finetune is not None:
        task = load_task(recipe.finetune.task, recipe)
        c = task.counts()
        info[f"finetune.task ({recipe.finetune.task.kind})"] = (
            f"{c['train']:,} train / {c['dev']:,} dev / {c['test']:,} test examples, "
            f"labels {task.label_names}"
        )
    info["cache"] = str(tlc_home())
    return info
