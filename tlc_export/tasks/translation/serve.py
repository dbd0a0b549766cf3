"""Translating new text with a finished translation run (`tlc translate RUN_DIR TEXT…`).

The model is the one dev prefers (highest dev BLEU, ties to the smaller size) unless a size is
named: dev selects, as everywhere else; its test BLEU is shown, never used to choose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tlc_export import integrity
from tlc_export.errors import StageError


def choose_model(rows: list[dict[str, Any]], size: str | None = None) -> dict[str, Any]:
    """The named size's row, or the best dev BLEU (first in grid order on ties: the smaller)."""
    if not rows:
        raise StageError("the translation run has no trained sizes")
    if size is not None:
        named = [r for r in rows if r["model"] == size]
        if not named:
            raise StageError(f"no size {size!r} in this run; it has {', '.join(r['model'] for r in rows)}")
        return named[0]
    best = rows[0]
    for r in rows[1:]:
        if r["dev_bleu"] > best["dev_bleu"]:
            best = r
    return best


def translate_with_run(family: Any, root: Path, recipe: Any, texts: list[str], *, size: str | None = None,
                       strategy: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """(the chosen size's row, the translations of `texts`); `family` builds the model."""
    from tlc_export.tasks.translation.decode import translate
    from tlc_export.tasks.translation.tokenizer import TranslationTokenizers

    results = root / "translation" / "results.json"
    if recipe.translation is None or not results.is_file():
        raise StageError(f"{root}: not a finished translation run (no translation/results.json); "
                         "run `tlc run` on a translation recipe first")
    row = choose_model(json.loads(results.read_text())["models"], size)
    # The checkpoint and tokenizer must be the bytes the translation stage wrote (and scored).
    read = [results, *sorted(p for d in (root / row["checkpoint"], root / "translation" / "tokenizer")
                             for p in Path(d).rglob("*") if p.is_file())]
    if (root / "translation" / integrity.RECORD_FILE).is_file():  # runs from before checksums: nothing to check
        integrity.verify_files(root, read, reader="`tlc translate`")
    model = family.build_model(recipe, checkpoint=root / row["checkpoint"])
    tokenizers = TranslationTokenizers.load(root / "translation" / "tokenizer")
    cfg = recipe.translation
    return row, translate(model, tokenizers, texts, cfg.decoding, max_source_length=cfg.max_source_length,
                          strategy=strategy)


def translate_command(family: Any) -> Any:
    """The `tlc translate` click command (`family` builds the model)."""
    import click
    from rich.console import Console

    from tlc_export.rundir import RunDir

    @click.command("translate")
    @click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
    @click.argument("texts", nargs=-1, required=True)
    @click.option("--model", "size", default=None, help="The size to translate with (default: the best dev BLEU).")
    @click.option("--greedy", is_flag=True, help="Greedy decoding instead of the recipe's decoding.")
    def translate_cmd(run_dir: Path, texts: tuple[str, ...], size: str | None, greedy: bool) -> None:
        """Translate TEXTS with a model of a finished translation run (RUN_DIR/translation/)."""
        rd = RunDir(run_dir)
        chosen, out = translate_with_run(family, rd.root, rd.recipe(), list(texts), size=size,
                                         strategy="greedy" if greedy else None)
        Console().print(f"[dim]{chosen['model']} (dev BLEU {chosen['dev_bleu']:.2f}, "
                        f"test BLEU {chosen['test_bleu']:.2f})[/dim]")
        for text in out:
            click.echo(text)

    return translate_cmd
