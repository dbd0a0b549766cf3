"""`tlc data prepare`: fetch and cache every source a recipe needs, ahead of a run."""

from __future__ import annotations

from tlc_export.data.corpus import load_source
from tlc_export.data.fetch import tlc_home
from tlc_export.data.task import load_task
from tlc_export.recipe import Recipe


def prepare_data(recipe: Recipe) -> dict[str, str]:
    """Fetch (once) and parse each corpus source and the finetune task; describe what is there.

    Returns {what: one-line description}. Raises DataSourceError for a source that cannot be
    fetched, naming the local-file alternative.
    """
    info: dict[str, str] = {}
    for i, src in enumerate(recipe.data.sources):
        docs = load_source(src, recipe, i)
        chars = sum(len(d) for d in docs)
        info[f"data.sources[{i}] ({src.kind})"] = f"{len(docs):,} documents, {chars / 1e6:.1f} M characters"
    if recipe.finetune is not None:
        task = load_task(recipe.finetune.task, recipe)
        c = task.counts()
        info[f"finetune.task ({recipe.finetune.task.kind})"] = (
            f"{c['train']:,} train / {c['dev']:,} dev / {c['test']:,} test examples, "
            f"labels {task.label_names}"
        )
    info["cache"] = str(tlc_home())
    return info
