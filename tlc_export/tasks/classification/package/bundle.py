"""Write a serving bundle (layout: `tlc_export.serving.bundle`) for one chosen (variant, format).

Everything is built in a temporary folder beside `--out` and renamed onto it at the end, after a
self-check (the bundle, opened as `tlc predict` opens it, gives the exported file's logits). Any
error leaves `--out` as it was.

tlc.json (schema 1): `schema, created_utc, tlc_version, name, run {dir, recipe_name, recipe_hash,
cache_keys}, selection {by, budget_mb | budget_ms, backend, batch, answer}, variant, model, format,
bits, sparsity, granularity, symmetric, codes, params, storage_bytes (the variant's packed storage,
what budgets compare), model_file {bytes, sha256, external_data}, accuracy {<split>: {accuracy, n,
ci, interval}} (the shipped file), accuracy_source, variant_accuracy (the variant in PyTorch, as the
report's tables show it), variant_accuracy_source, majority_accuracy, learned_task, latency [bench
rows: backend, device, dtype, batch, seq_len, threads, latency_ms_p50, latency_ms_p90,
throughput_seq_s, runtime_version], validation {reference, max_abs_diff, tolerance},
graph_optimization, labels, max_length, inputs, outputs, runtime {exported_with, packaged_with},
tensorrt (engines only), triton {name, path, max_batch_size}, self_check {texts, max_abs_diff}`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tlc_export import integrity, stats
from tlc_export.atomic import atomic_path
from tlc_export.package.choice import Choice, PackageError
from tlc_export.package.gpu import check_engine_gpu
from tlc_export.package.out import check_out, finish, header, runtime
from tlc_export.package.triton import config_pbtxt, graph_io, model_name
from tlc_export.rundir import RESOLVED_RECIPE, RunDir
from tlc_export.serving.bundle import CONFIG_FILE, MODEL_FILE, sha256_file
from tlc_export.tasks.classification.package.readme import render_readme
from tlc_export.tokens import ServingTokenizer

EXTERNAL_DATA_BYTES = 2 * 1024**3  # protobuf's limit for one file; above it weights go to model.onnx.data
EXTERNAL_DATA_FILE = MODEL_FILE + ".data"
DEFAULT_MAX_BATCH = 32  # Triton max_batch_size for ONNX files (an engine's comes from its largest profile)
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
SELF_CHECK_TEXTS = ("a gorgeous, witty, seductive movie.", "the plot is dull and the acting is worse.", "ok", "")
LATENCY_FIELDS = ("backend", "device", "dtype", "batch", "seq_len", "threads", "latency_ms_p50", "latency_ms_p90",
                  "throughput_seq_s", "runtime_version")


def _sources(root: Path, choice: Choice) -> dict[str, Path]:
    """Every file the bundle copies, checked to exist before anything is written."""
    model_dir = root / "finetune" / str(choice.export.get("model") or (choice.compress or {}).get("model")) / "model"
    src = {"config": model_dir / CONFIG_FILE, "tokenizer": model_dir / "tokenizer.json",
           "tokenizer_config": model_dir / "tokenizer_config.json"}
    if choice.is_engine:
        src["engine"] = root / choice.export["path"]
        onnx_rel = choice.export.get("onnx_path")
        if not onnx_rel:
            raise PackageError(f"{choice.variant} {choice.format}: the export row names no ONNX source for the engine; "
                               "rerun `tlc export RUN_DIR --force`")
        src["onnx"] = root / onnx_rel
    else:
        src["onnx"] = root / choice.export["path"]
    for key, path in src.items():
        if not path.is_file():
            fix = "rerun `tlc export RUN_DIR --force`" if key in ("onnx", "engine") else "rerun `tlc finetune RUN_DIR --force`"
            raise PackageError(f"{path}: missing ({key} of {choice.variant} {choice.format}); {fix}")
    return src


def _result_files(root: Path) -> list[Path]:
    """The stage results a bundle's numbers and labels come from."""
    return [p for p in (root / "export" / "results.json", root / "compress" / "results.json",
                        root / "finetune" / "results.json") if p.is_file()]


def _labels(root: Path, num_labels: int) -> list[str]:
    path = root / "finetune" / "results.json"
    names: list[str] = []
    if path.is_file():
        data = json.loads(path.read_text())
        names = [str(n) for n in (data.get("label_names") or [])] if isinstance(data, dict) else []
    if len(names) != num_labels:
        names = [f"LABEL_{i}" for i in range(num_labels)]
    return names


def _write_model(src: Path, dst: Path, threshold: int) -> bool:
    """Copy the ONNX file; re-save with external data (`model.onnx.data`) when its weights exceed `threshold`
    bytes or the source already keeps them outside. Returns whether external data was written."""
    proto = onnx.load(str(src), load_external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    if not external and src.stat().st_size <= threshold:
        shutil.copyfile(src, dst)
        return False
    proto = onnx.load(str(src))  # with its weights
    onnx.save_model(proto, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=EXTERNAL_DATA_FILE, size_threshold=1024)
    return True


def _hf_files(src: dict[str, Path], tmp: Path, labels: list[str], max_length: int) -> dict[str, Any]:
    config = json.loads(src["config"].read_text())
    config["id2label"] = {str(i): n for i, n in enumerate(labels)}
    config["label2id"] = {n: i for i, n in enumerate(labels)}
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(src["tokenizer"], tmp / "tokenizer.json")
    tok_cfg = json.loads(src["tokenizer_config"].read_text())
    # transformers 5 writes "TokenizersBackend", which transformers 4.x cannot load; this class loads in both.
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg["model_max_length"] = max_length
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    special = {k: tok_cfg[k] for k in SPECIAL_TOKENS if tok_cfg.get(k) is not None}
    (tmp / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return config


def _self_check(tmp: Path, source_onnx: Path) -> dict[str, Any]:
    """The bundle as `tlc predict` opens it gives the exported file's logits on a few texts."""
    from tlc_export.serving import Bundle, Predictor
    from tlc_export.serving.predictor import session
    from tlc_export.tokens import length_batches, pad_batch

    pred = Predictor(Bundle.open(tmp, verify=False))
    got = pred.logits(list(SELF_CHECK_TEXTS))
    ref_sess = session(str(source_onnx))
    ids = pred.tokenizer.encode(list(SELF_CHECK_TEXTS))
    want = np.zeros_like(got)
    for index in length_batches([len(x) for x in ids], pred.batch_size):
        a, m = pad_batch(ids, index, pred.tokenizer.pad_id)
        want[index] = ref_sess.run(None, {"input_ids": a, "attention_mask": m})[0]
    diff = float(np.abs(got - want).max())
    if diff != 0.0:
        raise PackageError(f"{tmp / MODEL_FILE}: bundle logits differ from {source_onnx} by {diff:.3g}; not written")
    return {"texts": len(SELF_CHECK_TEXTS), "max_abs_diff": diff, "reference": str(source_onnx)}


def _task_facts(root: Path) -> tuple[dict[str, int], str]:
    """(examples per split, the export stage's accuracy split) of the run's task; ({}, "dev") when the
    task cannot be loaded here (then accuracies are recorded without an interval)."""
    try:
        from tlc_export.data import load_task
        from tlc_export.recipe import parse_recipe

        resolved = root / RESOLVED_RECIPE
        base = RunDir(root).load_manifest().get("recipe_base_dir")
        recipe = parse_recipe(resolved.read_text(), file=str(resolved), base_dir=Path(base) if base else root)
        task = load_task(recipe.finetune.task, recipe)
        split = recipe.export.accuracy_split if recipe.export else "dev"
        return {"dev": len(task.dev), "test": len(task.test)}, split
    except Exception:  # noqa: BLE001 - provenance only: a missing interval must not stop packaging
        return {}, "dev"


def _with_interval(acc: Any, n: int | None) -> dict[str, Any]:
    """An accuracy measured on n examples, with its 95 % Wilson interval."""
    out: dict[str, Any] = {"accuracy": float(acc), "n": n, "ci": None}
    if n:
        out["ci"] = list(stats.wilson_interval(round(float(acc) * n), n))
        out["interval"] = "wilson-95"
    return out


def _accuracy(choice: Choice, sizes: dict[str, int], export_split: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(accuracy of the shipped file per split, where each came from, accuracy of the variant in PyTorch).

    The shipped file's accuracies are the bench's rows for this (variant, format) on its runtime (scored
    with `tlc predict`'s batches), else the export stage's ONNX Runtime score on its accuracy split."""
    backend = "tensorrt" if choice.is_engine else "onnxruntime"
    rows = [b for b in choice.bench if b.get("backend") == backend]
    out: dict[str, Any] = {}
    sources = []
    for split in ("dev", "test"):
        value = next((b[f"{split}_accuracy"] for b in rows if b.get(f"{split}_accuracy") is not None), None)
        if value is not None:
            out[split] = _with_interval(value, sizes.get(split))
            sources.append(f"{split}: bench/results.jsonl ({backend} row of this file)")
    e = choice.export or {}
    for split in ("dev", "test"):  # the file's own score on every split (export rows of this version)
        if split not in out and e.get(f"{split}_accuracy") is not None:
            out[split] = _with_interval(e[f"{split}_accuracy"], sizes.get(split))
            sources.append(f"{split}: export stage (this file through a plain ONNX Runtime CPU session, tlc predict's batches)")
    plain = e.get("dev_accuracy_onnx_ort_default", e.get("dev_accuracy_onnx"))
    if export_split not in out and plain is not None:
        out[export_split] = _with_interval(plain, sizes.get(export_split))
        sources.append(f"{export_split}: export stage (this file through a plain ONNX Runtime CPU session)")
    comp = choice.compress or {}
    variant = {split: _with_interval(comp[f"{split}_accuracy"], sizes.get(split))
               for split in ("dev", "test") if comp.get(f"{split}_accuracy") is not None}
    return out, "; ".join(sources) or "not measured", variant


def write_bundle(
    run_dir: str | Path,
    choice: Choice,
    out: str | Path,
    *,
    force: bool = False,
    name: str | None = None,
    max_batch_size: int | None = None,
    allow_other_gpu: bool = False,
    external_data_bytes: int = EXTERNAL_DATA_BYTES,
) -> dict[str, Any]:
    """Write the bundle of `choice` to `out`; returns its tlc.json."""
    root = Path(run_dir)
    out = Path(out).absolute()
    check_out(out, force)
    src = _sources(root, choice)
    # What is shipped must be the bytes the export stage wrote and measured (its accuracy goes into tlc.json).
    integrity.verify_files(root, [*src.values(), *_result_files(root)], reader="`tlc package`")
    trt = check_engine_gpu(choice.export, allow_other_gpu) if choice.is_engine else None
    inputs, outputs = graph_io(src["onnx"])
    finetune_cfg = json.loads(src["config"].read_text())
    labels = _labels(root, int(finetune_cfg.get("num_labels") or len(finetune_cfg.get("id2label") or {}) or 2))
    max_length = _max_length(root, finetune_cfg)
    tname = model_name(name or choice.variant)
    if max_batch_size is None:
        max_batch_size = _engine_max_batch(choice.export) or DEFAULT_MAX_BATCH

    accuracy, accuracy_source, variant_accuracy = _accuracy(choice, *_task_facts(root))

    with atomic_path(out) as tmp:
        tmp.mkdir()
        external = _write_model(src["onnx"], tmp / MODEL_FILE, external_data_bytes)
        _hf_files(src, tmp, labels, max_length)
        tokenizer = ServingTokenizer.from_dir(tmp, max_length)
        kind = "plan" if choice.is_engine else "onnx"
        repo = tmp / "triton" / tname
        (repo / "1").mkdir(parents=True)
        if choice.is_engine:
            shutil.copyfile(src["engine"], repo / "1" / "model.plan")
        else:
            shutil.copyfile(tmp / MODEL_FILE, repo / "1" / MODEL_FILE)
            if external:
                shutil.copyfile(tmp / EXTERNAL_DATA_FILE, repo / "1" / EXTERNAL_DATA_FILE)
        (repo / "config.pbtxt").write_text(config_pbtxt(
            tname, kind, inputs, outputs, max_batch_size, len(labels), "KIND_GPU" if choice.is_engine else "KIND_CPU"))
        model_bytes = (tmp / MODEL_FILE).stat().st_size + (
            (tmp / EXTERNAL_DATA_FILE).stat().st_size if external else 0)
        e, c = choice.export, choice.compress or {}
        meta: dict[str, Any] = {
            **header(root, choice, tname),
            "variant": choice.variant, "model": e.get("model") or c.get("model"), "format": choice.format,
            "bits": e.get("bits") or c.get("bits"), "sparsity": c.get("sparsity"), "granularity": c.get("granularity"),
            "symmetric": c.get("symmetric"), "zero_point": c.get("zero_point"), "codes": e.get("codes"), "params": c.get("params"),
            "storage_bytes": e.get("storage_bytes") or c.get("storage_bytes"),
            "model_file": {"bytes": (tmp / MODEL_FILE).stat().st_size, "sha256": sha256_file(tmp / MODEL_FILE),
                           "external_data": EXTERNAL_DATA_FILE if external else None,
                           "external_data_sha256": sha256_file(tmp / EXTERNAL_DATA_FILE) if external else None,
                           "total_bytes": model_bytes,
                           "source": e.get("onnx_path") if choice.is_engine else e.get("path")},
            "accuracy": accuracy, "accuracy_source": accuracy_source,
            "variant_accuracy": variant_accuracy,
            "variant_accuracy_source": "compress/results.json: the variant in PyTorch (what the report's tables show)",
            "majority_accuracy": e.get("majority_accuracy"), "learned_task": e.get("learned_task"),
            "latency": [{k: b.get(k) for k in LATENCY_FIELDS} for b in choice.bench if b.get("latency_ms_p50") is not None],
            "validation": {"reference": "the PyTorch model of the variant (export stage)", "max_abs_diff": e.get("max_abs_diff"),
                           "tolerance": e.get("tolerance")},
            "graph_optimization": e.get("graph_optimization"),
            "labels": labels, "max_length": max_length, "pad_token_id": tokenizer.pad_id,
            "pad_token": tokenizer.tokenizer.id_to_token(tokenizer.pad_id),
            "inputs": [s.to_dict() for s in inputs], "outputs": [s.to_dict() for s in outputs],
            "runtime": runtime(root),
            "tensorrt": trt,
            "triton": {"name": tname, "path": f"triton/{tname}", "max_batch_size": max_batch_size,
                       "platform": "tensorrt_plan" if choice.is_engine else "onnxruntime_onnx"},
        }
        finish(tmp, meta, lambda: _self_check(tmp, src["onnx"]), render_readme)
    return meta


def _max_length(root: Path, config: dict[str, Any]) -> int:
    """finetune.max_length of the run's recipe (what the model was trained and scored with)."""
    import yaml

    path = root / "recipe.resolved.yaml"
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
        return int(recipe["finetune"]["max_length"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return int(config.get("max_position_embeddings", 514)) - 2


def _engine_max_batch(row: dict[str, Any]) -> int | None:
    profiles = row.get("trt_profiles") or []
    maxes = [int(p["max"][0]) for p in profiles if isinstance(p, dict) and p.get("max")]
    return max(maxes) if maxes else None
