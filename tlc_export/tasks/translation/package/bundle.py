"""Write a translation bundle (layout: `tlc_export.tasks.translation.serving.translator`) for one chosen (variant, format).

The bundle is built in a temporary folder beside `--out` and renamed onto it at the end, after a
self-check: the bundle, opened as `tlc predict` opens it (checksums verified), gives token for token
the greedy output of the export folder's own files on a few sentences. Any error leaves `--out` as it was.

tlc.json (schema 1, `family: translation`): `schema, family, created_utc, tlc_version, name, run {dir,
recipe_name, recipe_hash, cache_keys}, selection {by, budget_mb | budget_ms, batch, metric, answer,
skipped}, source_lang, target_lang, variant, model, format, bits, sparsity, granularity, params,
storage_bytes (the variant's packed storage, what budgets compare; for onnx-int8-dynamic the files'),
file_bytes (encoder + decoder on disk), files {relative path: {bytes, sha256}}, bleu {dev|test: {bleu,
ci, n}}, chrf {…}, bleu_source, variant_bleu {dev|test} (the variant in PyTorch with the recipe's
decoding, the report's figure), variant_decoding, bleu_signature, chrf_signature, interval_method,
decoding {strategy: greedy, max_length, max_source_length, pad_token_id, eos_token_id,
decoder_start_token_id}, recipe_decoding, tokenizer {shared, source, target, vocab_size}, inputs,
outputs, validation (the export stage's), latency [bench rows of this file], runtime {exported_with,
packaged_with}, self_check {sentences, equal, reference, export_predictions}`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tlc_export import integrity
from tlc_export.atomic import atomic_path
from tlc_export.package.choice import Choice, PackageError, run_recipe
from tlc_export.package.out import check_out, finish, header, runtime
from tlc_export.package.triton import graph_io, model_name
from tlc_export.serving.bundle import META_FILE, sha256_file
from tlc_export.tasks.translation.ort import DECODER_FILE, ENCODER_FILE, OrtTranslator
from tlc_export.tasks.translation.package.readme import render_translation_readme
from tlc_export.tasks.translation.serving.translator import (
    FAMILY,
    TOKENIZER_DIR,
    TranslationBundle,
    Translator,
    until_eos,
)
from tlc_export.tasks.translation.tokenizer import EOS_ID, PAD_ID
from tlc_export.tokens import length_batches, pad_batch

SELF_CHECK_TEXTS = ("In the beginning God created the heavens and the earth.", "Jesus wept.",
                    "And God said, Let there be light: and there was light.", "")
EXPORT_CHECK_SENTENCES = 16  # the export stage's own dev translations the bundle is compared with (recorded)
LATENCY_FIELDS = ("backend", "format", "batch_size", "threads", "sentences", "sentences_per_s", "p50_ms", "p90_ms")


def _sources(root: Path, choice: Choice) -> dict[str, Path]:
    """Every file or folder the bundle copies, checked to exist before anything is written."""
    e = choice.export or {}
    folder = root / str(e.get("folder"))
    src = {ENCODER_FILE: folder / ENCODER_FILE, DECODER_FILE: folder / DECODER_FILE}
    for name, path in src.items():
        if not path.is_file():
            raise PackageError(f"{path}: missing ({name} of {choice.variant} {choice.format}); "
                               f"rerun `tlc export {root} --force`")
    tok = root / "translation" / "tokenizer"
    shared = (tok / "tokenizer.json").is_file()
    if not shared and not ((tok / "source" / "tokenizer.json").is_file() and (tok / "target" / "tokenizer.json").is_file()):
        raise PackageError(f"{tok}: no translation tokenizer (tokenizer.json, or source/ and target/); "
                           f"rerun `tlc translation {root} --force`")
    src[TOKENIZER_DIR] = tok
    return src


def _split_scores(row: dict[str, Any], metric: str) -> dict[str, Any]:
    return {split: {metric: row[f"{split}_{metric}"], "ci": row.get(f"{split}_{metric}_ci"), "n": row.get(f"{split}_n")}
            for split in ("dev", "test") if row.get(f"{split}_{metric}") is not None}


def _listing(tmp: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {bytes, sha256}} of every file of the bundle (tlc.json and the README aside)."""
    out = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        rel = path.relative_to(tmp).as_posix()
        if rel not in (META_FILE, "README.md"):
            out[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return out


def _self_check(tmp: Path, source: Path, root: Path, export: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """The bundle as `tlc predict` opens it against the export folder's files (must be equal), and against
    the export stage's own dev translations (recorded: the stage may batch sentences differently)."""
    translator = Translator(TranslationBundle.open(tmp, verify=True), threads=threads)
    texts = list(SELF_CHECK_TEXTS)
    got = translator.token_ids(texts)
    ref = OrtTranslator.open(source, threads)
    ids = translator.source.encode(texts)
    want: list[list[int]] = [[] for _ in texts]
    for index in length_batches([len(x) for x in ids], translator.batch_size):
        a, m = pad_batch(ids, index, translator.source.pad_id)
        for row, i in zip(ref.greedy(a, m, translator.bundle.max_length), index, strict=True):
            want[int(i)] = until_eos(row, EOS_ID)
    bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    if bad:
        raise PackageError(f"{tmp}: the bundle's greedy output differs from {source} on {len(bad)} of {len(texts)} "
                           f"self-check sentences (first: {texts[bad[0]]!r}); not written")
    out: dict[str, Any] = {"sentences": len(texts), "equal": True, "reference": str(source),
                           "texts": texts, "translations": translator.translate(texts)}
    rel = export.get("predictions")
    if rel and (root / rel).is_file():
        try:
            dev = json.loads((root / rel).read_text()).get("dev") or {}
        except (json.JSONDecodeError, AttributeError):
            dev = {}
        sources, hyps = list(dev.get("sources") or [])[:EXPORT_CHECK_SENTENCES], list(dev.get("hypotheses") or [])
        if sources and len(hyps) >= len(sources):
            mine = translator.translate(sources)
            agree = sum(a == b for a, b in zip(mine, hyps, strict=False))
            out["export_predictions"] = {"file": rel, "sentences": len(sources), "identical": agree}
    return out


def write_translation_bundle(
    run_dir: str | Path,
    choice: Choice,
    out: str | Path,
    *,
    force: bool = False,
    name: str | None = None,
    threads: int | None = None,
    **triton: Any,
) -> dict[str, Any]:
    """Write the translation bundle of `choice` to `out`; returns its tlc.json (`triton`: the classification
    bundle's --max-batch-size / --allow-other-gpu, refused when given)."""
    if triton.get("max_batch_size") is not None or triton.get("allow_other_gpu"):
        raise PackageError("--max-batch-size and --allow-other-gpu set up Triton / TensorRT, which a translation bundle "
                           "does not ship (its greedy loop runs two ONNX Runtime graphs); leave them out")
    root = Path(run_dir)
    out = Path(out).absolute()
    check_out(out, force)
    if choice.export is None:
        raise PackageError(f"{choice.variant} {choice.format}: not exported; rerun `tlc export {root} --force`")
    src = _sources(root, choice)
    # What is shipped must be the bytes the export stage wrote and measured (its BLEU goes into tlc.json).
    tok_files = sorted(p for p in src[TOKENIZER_DIR].rglob("*") if p.is_file())
    results = [p for p in (root / "export" / "results.json", root / "compress" / "results.json",
                           root / "translation" / "results.json") if p.is_file()]
    integrity.verify_files(root, [src[ENCODER_FILE], src[DECODER_FILE], *tok_files, *results], reader="`tlc package`")
    cfg = run_recipe(root).translation
    if cfg is None:
        raise PackageError(f"{root}: the run's recipe has no translation section; it is not a translation run")
    mt_path = root / "translation" / "results.json"
    mt = json.loads(mt_path.read_text()) if mt_path.is_file() else {}
    e, c = choice.export, choice.compress or {}
    inputs = {f: [s.to_dict() for s in graph_io(src[f])[0]] for f in (ENCODER_FILE, DECODER_FILE)}
    outputs = {f: [s.to_dict() for s in graph_io(src[f])[1]] for f in (ENCODER_FILE, DECODER_FILE)}
    file_bytes = src[ENCODER_FILE].stat().st_size + src[DECODER_FILE].stat().st_size
    bname = model_name(name or choice.variant)

    with atomic_path(out) as tmp:
        tmp.mkdir()
        for f in (ENCODER_FILE, DECODER_FILE):
            shutil.copyfile(src[f], tmp / f)
        shutil.copytree(src[TOKENIZER_DIR], tmp / TOKENIZER_DIR)
        shared = (tmp / TOKENIZER_DIR / "tokenizer.json").is_file()
        tok_side = {s: TOKENIZER_DIR if shared else f"{TOKENIZER_DIR}/{s}" for s in ("source", "target")}
        meta: dict[str, Any] = {
            **header(root, choice, bname, FAMILY),
            "source_lang": mt.get("source_lang", cfg.source_lang), "target_lang": mt.get("target_lang", cfg.target_lang),
            "variant": choice.variant, "model": e.get("model") or c.get("model"), "format": choice.format,
            "bits": e.get("bits") or c.get("bits"), "sparsity": e.get("sparsity", c.get("sparsity")),
            "granularity": c.get("granularity"), "params": c.get("params"),
            "storage_bytes": e.get("storage_bytes") or (c.get("storage_bytes") if choice.format != "onnx-int8-dynamic"
                                                        else file_bytes),
            "file_bytes": file_bytes,
            "files": _listing(tmp),
            "bleu": _split_scores(e, "bleu"), "chrf": _split_scores(e, "chrf"),
            "bleu_source": "export stage: this file pair through a plain ONNX Runtime CPU session, greedy (the loop "
                           "`tlc predict` runs)",
            "variant_bleu": _split_scores(c, "bleu"),
            "variant_decoding": c.get("decoding"),
            "bleu_signature": e.get("bleu_signature") or c.get("bleu_signature"),
            "chrf_signature": e.get("chrf_signature") or c.get("chrf_signature"),
            "interval_method": e.get("interval_method") or c.get("interval_method"),
            "decoding": {"strategy": "greedy", "max_length": cfg.decoding.max_length,
                         "max_source_length": cfg.max_source_length, "pad_token_id": PAD_ID, "eos_token_id": EOS_ID,
                         "decoder_start_token_id": PAD_ID},
            "recipe_decoding": cfg.decoding.model_dump(),
            "tokenizer": {"shared": shared, **tok_side, "vocab_size": cfg.tokenizer.vocab_size},
            "inputs": inputs, "outputs": outputs,
            "validation": e.get("validation"),
            "latency": [{k: b.get(k) for k in LATENCY_FIELDS} for b in choice.bench if b.get("p50_ms") is not None],
            "runtime": runtime(root),
        }
        finish(tmp, meta, lambda: _self_check(tmp, src[ENCODER_FILE].parent, root, e, threads),
               render_translation_readme, ensure_ascii=False)
    return meta
