"""One command that exercises every GPU path of the project and says what works.

    python -m runtime_bench.gpu_check --out DIR [--work DIR] [--budget-s 470] [--only pretrain_resume,...]

Checks, in order (each one JSON line in DIR/checks.jsonl: check, status ok|fail|unavailable|skipped,
seconds, error, figures; then DIR/summary.json and a table):
1. `environment`: GPU model, driver, CUDA, torch/transformers/onnxruntime/TensorRT versions, and
   whether the project's own imports (pydantic) work;
2. `pretrain_resume`: `tlc run` (as `python -m tlc_export run`) on recipes/gpu-quick.yaml cut to two
   sizes and 20 s each, until the pretrain stage; the run is killed with SIGKILL after the second
   size's first checkpoint and run again, which must resume. Checks every size's budget, that
   compilation was reported as compile_s outside it, that no graph was recompiled after the
   warm-up, and both FLOP counts;
3. `pretrain_throughput`: 12L-768H, seq 128, batch 128, bf16: our step vs plain `transformers`
   eager and compiled, MFU (the paper's model FLOPs) and HFU (computed FLOPs);
4. `bench_torch`: a 12L-768H classifier through torch-eager (fp16, bf16), torch-compile (CUDA graphs,
   fp16), torch-int8 (`_int_mm`, fp16) and torch-int4 (tinygemm, bf16) at batch 1 and 32;
5. `onnxruntime_cuda`: the CUDA execution provider on the same classifier's ONNX file, or unavailable;
6. `tensorrt`: an fp16 engine of that file with one profile per batch, timed on torch's stream, or
   unavailable;
7. `translation`: a 2L-256H Marian trained for 40 steps from memory-mapped pair files with bf16 autocast,
   a greedy decode of a dev sample and its BLEU/chrF (sacrebleu; recorded as unavailable, with the
   reason, when it was not carried); figures: step time, tokens/s, dev loss before/after, BLEU;
8. `pytest_gpu`: the test suite's `gpu`-marked tests.
A check that would not fit in what is left of `--budget-s` is `skipped`. On one H100/H200 the whole
run takes about 6–7 minutes (estimated; not yet measured).

Running it on a machine without a package index (the lent GPU image has torch, transformers, onnx
and onnxruntime but no pydantic): on a machine with PyPI, in the repository,

    make gpu-carry        # wheels for Python 3.12 into .whl/, built-in data into .tlc-home/

then, on the GPU machine, in the repository (both folders copied along, e.g. carry [".whl", ".tlc-home"]):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \\
      && export PYTHONPATH=/tmp/site:$PWD TLC_HOME=$PWD/.tlc-home \\
      && python3 -m runtime_bench.gpu_check --out "$OUT"

This module imports only the standard library at start; each check imports what it uses.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PRETRAIN_SIZES = ({"layers": 6, "hidden": 512}, {"layers": 9, "hidden": 640})
PRETRAIN_BUDGET_S = 20.0


class Unavailable(Exception):
    """The path cannot run on this machine (missing runtime), which is a finding, not a failure.

    `Unavailable(reason, figures)` keeps what was learnt before the path turned out unavailable."""


class CheckFailed(Exception):
    """The path ran and gave a wrong or suspicious result."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# --- checks -------------------------------------------------------------------------------------


def check_environment(args: argparse.Namespace) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    figures: dict[str, Any] = {"python": sys.version.split()[0], "cuda_available": torch.cuda.is_available()}
    for pkg in ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
                "pydantic", "triton"):
        try:
            figures[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            figures[pkg] = None
    if torch.cuda.is_available():
        from runtime_bench.metrics import nvidia_driver
        from runtime_bench.peaks import gpu_peak

        figures["gpu"] = torch.cuda.get_device_name(0)
        figures["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        figures["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        figures["cuda_runtime"] = torch.version.cuda
        figures["driver"] = nvidia_driver()
        figures["peak_bf16_tflops"] = gpu_peak(figures["gpu"])[0] / 1e12
    try:
        import onnxruntime as ort

        figures["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    try:
        import tlc_export.recipe  # noqa: F401 - the project's import chain (pydantic) works
    except ImportError as exc:
        raise CheckFailed(f"the project cannot be imported ({exc}); carry the wheels: see `make gpu-carry`") from exc
    if not torch.cuda.is_available():
        raise Unavailable("torch sees no CUDA device", figures)
    return figures


def _sizes(args: argparse.Namespace) -> list[dict[str, int]]:
    if not args.pretrain_sizes:
        return list(PRETRAIN_SIZES)
    out = []
    for text in args.pretrain_sizes.split(","):
        layers, hidden = text.upper().rstrip("H").split("L-")
        out.append({"layers": int(layers), "hidden": int(hidden)})
    return out


def _gpu_quick_recipe(work: Path, args: argparse.Namespace) -> Path:
    import yaml

    recipe = yaml.safe_load((REPO / "recipes" / "gpu-quick.yaml").read_text())
    recipe["models"] = {"sizes": _sizes(args)}
    recipe["pretrain"].update(time_budget_s=PRETRAIN_BUDGET_S, eval_every_s=10, eval_batches=4, checkpoint_every_s=6)
    if args.pretrain_device == "cpu":  # trying the check's machinery without a GPU
        recipe["pretrain"].update(device="cpu", precision="fp32", compile_backend="aot_eager", batch_size=16,
                                  micro_batch_size=8)
    path = work / "gpu-check.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def check_pretrain_resume(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available() and args.pretrain_device != "cpu":
        raise Unavailable("no CUDA device")
    work = Path(args.work) / "pretrain"
    work.mkdir(parents=True, exist_ok=True)
    recipe = _gpu_quick_recipe(work, args)
    run_dir = work / "run"
    cmd = [sys.executable, "-m", "tlc_export", "run", str(recipe), "--run-dir", str(run_dir), "--until", "pretrain"]
    log1 = work / "first.log"
    second = "{layers}L-{hidden}H".format(**_sizes(args)[-1])
    state = run_dir / "pretrain" / second / "state" / "trainer.json"
    with open(log1, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        killed = proc.poll() is None and state.exists()
        if killed:
            time.sleep(3.0)  # train past the checkpoint, so work is lost and must be redone
            os.killpg(proc.pid, signal.SIGKILL)
        elif proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if not killed:
        raise CheckFailed(f"no checkpoint of {second} before the deadline (exit {proc.returncode}); "
                          f"log tail: {log1.read_text()[-1500:]}")
    saved_step = json.loads(state.read_text())["step"]
    t0 = time.monotonic()
    again = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    resume_s = time.monotonic() - t0
    (work / "second.log").write_text(again.stdout + again.stderr)
    if again.returncode != 0:
        raise CheckFailed(f"the resumed run failed (exit {again.returncode}): {(again.stdout + again.stderr)[-1500:]}")
    if "resuming at step" not in again.stdout:
        raise CheckFailed("the second run did not resume the killed size")
    results = json.loads((run_dir / "pretrain" / "results.json").read_text())
    rows = results["models"]
    problems = []
    for r in rows:
        if not PRETRAIN_BUDGET_S <= r["elapsed_s"] < PRETRAIN_BUDGET_S + 5:
            problems.append(f"{r['model']}: {r['elapsed_s']} s of training for a {PRETRAIN_BUDGET_S} s budget")
        if not r.get("compile_s"):
            problems.append(f"{r['model']}: no compile_s recorded")
        if r.get("recompiles_after_warmup") != 0:
            problems.append(f"{r['model']}: {r.get('recompiles_after_warmup')} recompiles after the warm-up")
        if not 0 < r["flops_computed"] < r["flops_paper"]:
            problems.append(f"{r['model']}: flops_computed {r['flops_computed']:.3g} vs paper {r['flops_paper']:.3g}")
    figures = {
        "killed_after_step": saved_step, "resume_run_s": round(resume_s, 1),
        "sizes": [{k: r.get(k) for k in ("model", "steps", "tokens_per_s", "elapsed_s", "compile_s", "micro_batch_size",
                                          "recompiles_after_warmup", "flops_paper", "flops_computed", "final_val_ppl")}
                  for r in rows],
    }
    if problems:
        raise CheckFailed("; ".join(problems) + f" | {json.dumps(figures)}")
    return figures


def check_pretrain_throughput(args: argparse.Namespace) -> dict[str, Any]:
    import contextlib
    import io

    import torch

    if not torch.cuda.is_available():
        raise Unavailable("no CUDA device")
    from runtime_bench import pretrain_throughput

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = pretrain_throughput.main(["--sizes", "12L-768H", "--batch", "128", "--micro", "128", "--seq", "128",
                                           "--vocab", "8192", "--steps", "8", "--warmup", "3", "--device", "cuda"])
    print(buf.getvalue(), file=sys.stderr)
    r = result["results"][0]
    figures = {name: {k: round(v, 4) if isinstance(v, float) else v for k, v in r[name].items()}
               for name in ("ours", "plain", "plain_compiled") if name in r}
    figures.update(peak_note=r["peak_note"], ratio_vs_plain=round(r["ratio_vs_plain"], 3),
                   ratio_vs_plain_compiled=round(r.get("ratio_vs_plain_compiled", float("nan")), 3),
                   targets={"ours_vs_plain_eager": ">= 1.25", "ours_vs_plain_compiled": ">= 1.0", "mfu_stretch": ">= 0.45"})
    return figures


def _classifier(work: Path) -> Path:
    """A 12L-768H pre-LN RoBERTa classifier (random weights: latency does not depend on them), saved once."""
    folder = work / "classifier-12L-768H"
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForSequenceClassification

    torch.manual_seed(0)
    cfg = RobertaPreLayerNormConfig(vocab_size=8192, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                    intermediate_size=3072, max_position_embeddings=130, num_labels=2,
                                    pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5)
    RobertaPreLayerNormForSequenceClassification(cfg).eval().save_pretrained(folder)
    return folder


def _rows_figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("backend", "dtype", "batch", "latency_ms_p50", "latency_ms_p90", "throughput_seq_s", "peak_mem_bytes",
            "model_mem_bytes", "runtime_version", "status", "reason")
    return [{k: r.get(k) for k in keep} for r in rows]


def check_bench_torch(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        raise Unavailable("no CUDA device")
    from runtime_bench.harness import BenchSettings, Variant, bench_variant

    folder = _classifier(Path(args.work))
    s = BenchSettings(batches=[1, 32], seq_len=128, warmup=10, runs=50, device="cuda")
    v = Variant("12L-768H.s00.b32", folder, model="12L-768H", vocab_size=8192)
    rows = []
    for backend, dtypes in (("torch-eager", ["fp16", "bf16"]), ("torch-compile", ["fp16"]),
                            ("torch-int8", ["fp16"]), ("torch-int4", ["bf16"])):
        rows += bench_variant(v, [backend], dtypes, s)
    failed = [r for r in rows if r["status"] != "ok"]
    ok = [r for r in rows if r["status"] == "ok" and r["batch"] == 1]
    best = min(ok, key=lambda r: r["latency_ms_p50"]) if ok else None
    figures = {"rows": _rows_figures(rows),
               "best_batch1": None if best is None else f"{best['backend']} {best['dtype']} {best['latency_ms_p50']:.3f} ms",
               "target_batch1_p50_ms": "<= 1.0"}
    if failed:
        raise CheckFailed(f"{len(failed)} rows not ok: " + "; ".join(f"{r['backend']} {r['dtype']} b{r['batch']}: "
                                                                  f"{r['reason']}" for r in failed[:4])
                          + f" | {json.dumps(figures, default=str)}")
    return figures


def _onnx_file(work: Path, fp16: bool) -> Path:
    path = work / ("classifier-fp16.onnx" if fp16 else "classifier-fp32.onnx")
    if path.exists():
        return path
    from transformers import AutoModelForSequenceClassification

    from tlc_export.export.int4 import to_fp16
    from tlc_export.export.onnx_export import export_template, save_model
    from tlc_export.export.qdq import rewrite_weights

    model = AutoModelForSequenceClassification.from_pretrained(_classifier(work)).float().eval()
    tpl = export_template(model, work / "graph.onnx")
    proto = tpl.load()
    rewrite_weights(proto, tpl.refs, {}, model.state_dict())
    save_model(to_fp16(proto) if fp16 else proto, path)
    return path


def check_onnxruntime_cuda(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Unavailable(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                          f"(providers: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu alone")
    from runtime_bench.harness import BenchSettings, Variant, bench_variant

    path = _onnx_file(Path(args.work), fp16=True)
    rows = bench_variant(Variant("12L-768H.onnx-fp16", path, format="onnx-fp16", vocab_size=8192), ["onnxruntime"],
                         ["fp32"], BenchSettings(batches=[1, 32], seq_len=128, warmup=10, runs=50, device="cuda"))
    if any(r["status"] != "ok" for r in rows):
        raise CheckFailed(f"{rows[0]['reason']} | {json.dumps(_rows_figures(rows), default=str)}")
    return {"rows": _rows_figures(rows)}


def check_tensorrt(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import tensorrt
    except ImportError as exc:
        raise Unavailable(f"tensorrt is not importable ({exc})") from exc
    from runtime_bench.harness import BenchSettings, Variant, bench_variant
    from tlc_export.export.tensorrt import build_engine, profile_shapes

    work = Path(args.work)
    onnx_path = _onnx_file(work, fp16=True)
    t0 = time.monotonic()
    info = build_engine(onnx_path, "fp16", profile_shapes([1, 32], 32, 128), work / "classifier-fp16.engine",
                        timing_cache=work / "trt_timing.cache")
    build_s = time.monotonic() - t0
    rows = bench_variant(Variant("12L-768H.tensorrt-fp16", work / "classifier-fp16.engine", format="tensorrt-fp16",
                                 vocab_size=8192), ["tensorrt"], ["fp32"],
                         BenchSettings(batches=[1, 32], seq_len=128, warmup=10, runs=50, device="cuda"))
    figures = {"tensorrt_version": tensorrt.__version__, "build_s": round(build_s, 1), "engine_bytes": info["bytes"],
               "rows": _rows_figures(rows)}
    if any(r["status"] != "ok" for r in rows):
        raise CheckFailed(f"{rows[0]['reason']} | {json.dumps(figures, default=str)}")
    # An engine timed on the wrong stream shows almost nothing: a 12L-768H forward cannot take < 0.05 ms.
    if min(r["latency_ms_p50"] for r in rows) < 0.05:
        raise CheckFailed(f"implausibly small TensorRT latency: the events did not see the engine | {json.dumps(figures)}")
    return figures


MT_STEPS = 40  # timed steps after 3 untimed warm-up steps
MT_WORDS = (("cat", "chat"), ("dog", "chien"), ("bird", "oiseau"), ("man", "homme"), ("woman", "femme"),
            ("child", "enfant"), ("house", "maison"), ("tree", "arbre"))
MT_VERBS = (("sees", "voit"), ("likes", "aime"), ("finds", "trouve"))
MT_RECIPE = """\
translation:
  data: {kind: tsv, path: unused.tsv}
  tokenizer: {vocab_size: 400, min_frequency: 1}
  sizes: [{layers: 2, hidden: 256}]
  max_source_length: 24
  max_target_length: 24
  dropout: 0.0
  train: {time_budget_s: 60, batch_tokens: 1536, max_tokens_per_micro_batch: 768, lr: 0.002, warmup_fraction: 0.0,
          seed: 0, device: DEVICE, precision: PRECISION}
  decoding: {strategy: greedy, max_length: 24, batch_size: 64}
"""


def check_translation(args: argparse.Namespace) -> dict[str, Any]:
    """A small Marian (2L-256H) trained for a few steps on CUDA with bf16 autocast, from memory-mapped pair
    files (the translation stage's path), then a greedy decode of a dev sample and its BLEU (sacrebleu)."""
    import torch

    device_name = args.mt_device
    if device_name == "cuda" and not torch.cuda.is_available():
        raise Unavailable("no CUDA device")
    from tlc_export.recipe import parse_recipe
    from tlc_export.tasks.translation import train as T
    from tlc_export.tasks.translation.batching import encode_pairs
    from tlc_export.tasks.translation.data import ParallelPair
    from tlc_export.tasks.translation.decode import translate
    from tlc_export.tasks.translation.model import build_translation_model
    from tlc_export.tasks.translation.pair_files import open_or_write
    from tlc_export.tasks.translation.tokenizer import train_tokenizers

    pairs = [ParallelPair(f"the {a} {v} the {b}", f"le {fa} {fv} le {fb}", f"{a}-{v}-{b}")
             for a, fa in MT_WORDS for v, fv in MT_VERBS for b, fb in MT_WORDS]
    precision = "bf16" if device_name == "cuda" else "fp32"
    cfg = parse_recipe(MT_RECIPE.replace("DEVICE", device_name).replace("PRECISION", precision)).translation
    work = Path(args.work) / "translation"
    tok = train_tokenizers(pairs, cfg.tokenizer)
    tok.save(work / "tokenizer")
    train = open_or_write(pairs, out_dir=work, tokenizers=tok, tokenizer_dir=work / "tokenizer",
                          max_source_length=cfg.max_source_length, max_target_length=cfg.max_target_length, plan={"check": 1})
    dev_pairs = pairs[::7]  # seen in training: a smoke test that the whole path learns, not a generalisation figure
    dev = encode_pairs(tok, dev_pairs, cfg.max_source_length, cfg.max_target_length)
    device = torch.device(device_name)
    dtype = T.autocast_dtype(cfg.train, device)  # type: ignore[arg-type]
    size = cfg.grid()[0]
    model = build_translation_model(size, cfg, source_vocab=len(tok.source), seed=0).to(device)
    optimizer = T.make_optimizer(model, cfg.train, device)  # type: ignore[arg-type]
    plan = T.StepPlan(train, cfg.train.max_tokens_per_micro_batch or 768, cfg.train.batch_tokens, seed=0)
    dev_before = T.dev_loss(model, dev, device)[0]
    position, losses, tokens = 0, [], 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = 0.0
    for step in range(3 + MT_STEPS):
        if step == 3:  # CUDA's lazy initialisation and autotuning stay out of the timing
            t0 = time.perf_counter()
        micro, position = plan.next_step(position)
        loss, n = T._step(model, optimizer, train, micro, cfg.train.lr, cfg, device, dtype)
        losses.append(loss)
        tokens += n if step >= 3 else 0
    seconds = time.perf_counter() - t0
    dev_after = T.dev_loss(model, dev, device)[0]
    t1 = time.perf_counter()
    hyps = translate(model, tok, [p.source for p in dev_pairs], cfg.decoding, max_source_length=cfg.max_source_length,
                     strategy="greedy")
    decode_s = time.perf_counter() - t1
    refs = [p.target for p in dev_pairs]
    figures: dict[str, Any] = {
        "model": size.name, "device": str(device), "precision": precision,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad), "train_pairs": len(train),
        "steps_timed": MT_STEPS, "step_ms": round(1000 * seconds / MT_STEPS, 2), "tokens_per_s": round(tokens / seconds),
        "train_loss_first": round(losses[0], 4), "train_loss_last": round(losses[-1], 4),
        "dev_loss_before": round(dev_before, 4), "dev_loss_after": round(dev_after, 4),
        "dev_sentences": len(dev_pairs), "decode_s": round(decode_s, 3),
        "exact_match": round(sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs), 3),
        "sample": {"source": dev_pairs[1].source, "reference": refs[1], "hypothesis": hyps[1]},
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None,
    }
    try:
        from tlc_export.tasks.translation.metrics import score_translations

        score = score_translations(hyps, refs, bootstrap=1)
        figures.update(dev_bleu=round(score.bleu, 2), dev_chrf=round(score.chrf, 2), bleu_signature=score.bleu_signature)
    except ImportError as exc:  # sacrebleu (or lxml, which it imports) not carried: the rest still counts
        figures.update(dev_bleu=None, bleu_unavailable=f"{type(exc).__name__}: {exc}; carry it with `make gpu-carry`")
    if not dev_after < dev_before:
        raise CheckFailed(f"dev loss did not fall ({dev_before:.3f} → {dev_after:.3f}) in {len(losses)} steps: {figures}")
    return figures


def check_pytest_gpu(args: argparse.Namespace) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=max(30, int(args.remaining)))
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-12:]
    if proc.returncode not in (0, 5):
        raise CheckFailed(" | ".join(tail))
    return {"summary": tail[-1] if tail else ""}


# name, function, seconds it needs at least (estimated on one H100/H200)
CHECKS: tuple[tuple[str, Callable[[argparse.Namespace], dict[str, Any]], float], ...] = (
    ("environment", check_environment, 5),
    ("pretrain_resume", check_pretrain_resume, 150),
    ("pretrain_throughput", check_pretrain_throughput, 100),
    ("bench_torch", check_bench_torch, 70),
    ("onnxruntime_cuda", check_onnxruntime_cuda, 30),
    ("tensorrt", check_tensorrt, 90),
    ("translation", check_translation, 45),
    ("pytest_gpu", check_pytest_gpu, 30),
)


def run_checks(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = out / "checks.jsonl"
    lines.write_text("")
    start = time.monotonic()
    only = set(args.only.split(",")) if args.only else None
    records = []
    for name, fn, need in CHECKS:
        if only and name not in only:
            continue
        args.remaining = args.budget_s - (time.monotonic() - start)
        rec: dict[str, Any] = {"check": name, "status": "ok", "seconds": 0.0, "error": None, "figures": None}
        if args.remaining < need:
            rec.update(status="skipped", error=f"{args.remaining:.0f} s left of --budget-s {args.budget_s:g}, needs ~{need:g} s")
        else:
            t0 = time.monotonic()
            try:
                rec["figures"] = fn(args)
            except Unavailable as exc:
                rec.update(status="unavailable", error=str(exc.args[0]), figures=exc.args[1] if len(exc.args) > 1 else None)
            except Exception as exc:  # noqa: BLE001 - every check reports, none stops the others
                rec.update(status="fail", error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc(limit=6)[-3000:])
            rec["seconds"] = round(time.monotonic() - t0, 1)
        records.append(rec)
        line = json.dumps(rec, default=str)
        with open(lines, "a") as f:
            f.write(line + "\n")
        print(line, flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime_bench.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for checks.jsonl and summary.json")
    ap.add_argument("--work", default=None, help="scratch folder for run directories and models (default: a temp dir)")
    ap.add_argument("--budget-s", type=float, default=470.0, help="skip checks that would not fit in this many seconds")
    ap.add_argument("--only", default=None, help="comma-separated check names: " + ",".join(n for n, _, _ in CHECKS))
    ap.add_argument("--pretrain-sizes", default=None, help="pretrain_resume sizes, e.g. 6L-512H,9L-640H (the default)")
    ap.add_argument("--pretrain-device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: try pretrain_resume's machinery (tlc run, kill -9, resume) without a GPU")
    ap.add_argument("--mt-device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: try the translation check's machinery (fp32) without a GPU")
    args = ap.parse_args(argv)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="tlc-gpu-check-")
        args.work = tmp.name
    t0 = time.monotonic()
    records = run_checks(args)
    summary = {"checks": {r["check"]: r["status"] for r in records}, "seconds": round(time.monotonic() - t0, 1),
               "ok": all(r["status"] in ("ok", "unavailable") for r in records)}
    env = next((r["figures"] for r in records if r["check"] == "environment" and r["figures"]), None)
    summary["environment"] = env
    Path(args.out, "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\n{'check':<22} {'status':<12} {'s':>7}  error")
    for r in records:
        print(f"{r['check']:<22} {r['status']:<12} {r['seconds']:>7.1f}  {(r['error'] or '')[:90]}")
    print(json.dumps(summary, default=str))
    if tmp is not None:
        tmp.cleanup()
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
