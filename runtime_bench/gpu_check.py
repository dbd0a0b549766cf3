"""One command that exercises every GPU path of the project in under 8 minutes and says what works.

    python -m runtime_bench.gpu_check --out DIR [--work DIR] [--budget-s 470] [--only tensorrt,...]
    python -m runtime_bench.gpu_check --plan        # the checks in order, each with its time estimate

Checks, most valuable first (the first ones are cheap and test what has never run; each is one JSON
line in DIR/checks.jsonl: check, status ok|fail|unavailable|skipped, seconds, error, figures), with
their estimated seconds on one H100 with cold compile caches:
1. `environment` (5): GPU, driver, CUDA, library versions, ONNX Runtime providers and install
   problems (`tlc_export.runtimes`), and whether the project's imports (pydantic) work;
2. `tensorrt` (40): every kind of file the export stage sends to TensorRT (fp16, INT8 fp16 Q/DQ,
   INT4 weight-only), from a 2L-128H classifier, through the project's TensorRT rules and a
   parse-only `OnnxParser` pass, then a small engine of each, timed at batch 1;
3. `onnxruntime_cuda` (30): a 12L-768H fp16 classifier on ONNX Runtime's CUDA provider with IO
   binding (device-resident inputs and logits), batch 1 and 32;
4. `pretrain_throughput` (130): 12L-768H, seq 128, batch 128, bf16: our step vs plain `transformers`
   eager and compiled (the same masking and clipping), model-FLOPs MFU and HFU;
5. `bench_torch` (80): the 12L-768H classifier through torch-eager (fp16, bf16), torch-compile (CUDA
   graphs, fp16, static shapes), torch-int8 (`_int_mm`, fp16) and torch-int4 (tinygemm, bf16), batch 1, 32;
6. `translation` (35): a 2L-256H Marian trained 40 steps from memory-mapped pair files, bf16, a greedy
   decode and its BLEU/chrF;
7. `pretrain_resume` (120): `tlc run` on recipes/gpu-quick.yaml cut to two small sizes and 12 s each,
   killed with SIGKILL after the second size's first checkpoint and run again: every budget, compile
   outside it, no recompile after the warm-up (graph breaks reported), both FLOP counts;
8. `pytest_gpu` (30): the `gpu`-marked tests.
Every check but `environment` runs in a child process killed at the deadline, and every process it
starts is capped by the time left, so one slow compile cannot overrun the call: a check that would not
fit in what is left of `--budget-s`, or ran out of it, is `skipped` (not verified), never `fail`.
DIR/summary.json is rewritten after every check (a call cut short keeps what finished): statuses,
`ok` (every check ok: `unavailable` and `skipped` are not), `targets_met` (each target of
docs/GPU-RESULTS.md against its measured figure) and `not_verified` (the paths that were not).

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
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PRETRAIN_SIZES = ({"layers": 4, "hidden": 256}, {"layers": 6, "hidden": 512})
PRETRAIN_BUDGET_S = 12.0
CALL_LIMIT_S = 480.0  # the plan must fit in 8 minutes
# Seconds kept back from every child's deadline: its record, the summary and the table are written in them.
MARGIN_S = 5.0


class Unavailable(Exception):
    """The path cannot run on this machine (missing runtime), which is a finding, not a failure.

    `Unavailable(reason, figures)` keeps what was learnt before the path turned out unavailable."""


class CheckFailed(Exception):
    """The path ran and gave a wrong or suspicious result."""


class OutOfTime(Exception):
    """The check ran out of the time left: not verified (`skipped`), not failed."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def time_left(args: argparse.Namespace) -> float:
    """Seconds until this check's deadline (wall clock: the deadline crosses processes)."""
    deadline = getattr(args, "deadline", None)
    return float("inf") if deadline is None else deadline - time.time()


def run_capped(cmd: list[str], seconds: float, **kwargs: Any) -> tuple[int, str]:
    """Run `cmd` for at most `seconds` (its own process group, killed whole at the deadline); (exit code,
    stdout + stderr). Raises OutOfTime when it had to be killed."""
    if seconds <= 1:
        raise OutOfTime(f"no time left to start {Path(cmd[0]).name}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            **kwargs)
    try:
        out, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        tail = " | ".join((out or "").strip().splitlines()[-3:])
        raise OutOfTime(f"stopped after {seconds:.0f} s, the time left ({tail[-300:]})") from None
    return proc.returncode, out or ""


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
    from tlc_export.runtimes import onnxruntime_problem, ort_distributions

    figures["onnxruntime_distributions"] = ort_distributions()
    problem = onnxruntime_problem(figures["onnxruntime_distributions"])
    if problem:
        raise CheckFailed(problem)
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
    recipe["pretrain"].update(time_budget_s=PRETRAIN_BUDGET_S, eval_every_s=6, eval_batches=4, checkpoint_every_s=4)
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
        # Both runs share what is left of the check's time: the first may use two thirds of it.
        deadline = time.monotonic() + 2 * time_left(args) / 3
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        killed = proc.poll() is None and state.exists()
        if killed:
            time.sleep(3.0)  # train past the checkpoint, so work is lost and must be redone
            os.killpg(proc.pid, signal.SIGKILL)
        elif proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise OutOfTime(f"no checkpoint of {second} within {2 * time_left(args) / 3:.0f} s of the time left")
        proc.wait()
    if not killed:
        raise CheckFailed(f"no checkpoint of {second} (exit {proc.returncode}); log tail: {log1.read_text()[-1500:]}")
    saved_step = json.loads(state.read_text())["step"]
    t0 = time.monotonic()
    code, text = run_capped(cmd, time_left(args), cwd=REPO, env=_env())
    resume_s = time.monotonic() - t0
    (work / "second.log").write_text(text)
    if code != 0:
        raise CheckFailed(f"the resumed run failed (exit {code}): {text[-1500:]}")
    if "resuming at step" not in text:
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
                                          "recompiles_after_warmup", "unique_graphs_after_warmup", "flops_paper", "flops_computed",
                                          "final_val_ppl")}
                  for r in rows],
    }
    # More than one graph from the warm-up means graph breaks split the step: slower, not wrong, so reported.
    figures["graph_breaks"] = {r["model"]: r["unique_graphs_after_warmup"] - 1 for r in rows
                               if (r.get("unique_graphs_after_warmup") or 0) > 1}
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
                   recompiles_after_warmup=r.get("recompiles_after_warmup"))
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
    keep = ("model", "backend", "device", "dtype", "batch", "latency_ms_p50", "latency_ms_p90", "throughput_seq_s",
            "peak_mem_bytes", "model_mem_bytes", "runtime_version", "status", "reason")
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
               "best_batch1": None if best is None else f"{best['backend']} {best['dtype']} {best['latency_ms_p50']:.3f} ms"}
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
    rows = bench_variant(Variant("12L-768H.onnx-fp16", path, format="onnx-fp16", model="12L-768H", vocab_size=8192),
                         ["onnxruntime"], ["fp32"], BenchSettings(batches=[1, 32], seq_len=128, warmup=10, runs=50,
                                                                  device="cuda"))
    if any(r["status"] != "ok" for r in rows):
        raise CheckFailed(f"{rows[0]['reason']} | {json.dumps(_rows_figures(rows), default=str)}")
    return {"rows": _rows_figures(rows), "io_binding": rows[0].get("io_binding")}


TRT_SMALL = {"layers": 2, "hidden": 128}


def _trt_files(work: Path) -> dict[str, tuple[Path, str]]:
    """Every kind of file the export stage sends to TensorRT, from a small classifier (the rules and the parser
    do not depend on size): fp16 graph, INT8 (ORT static Q/DQ as fp16), INT4 weight-only (symmetric blocks of
    64 along K, fp16). {format: (path, precision)}."""
    import numpy as np
    import torch
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForSequenceClassification

    from tlc_export.compress.quantize import QuantConfig, quantize_tensor
    from tlc_export.export import ort_quant
    from tlc_export.export.int4 import int4_model, to_fp16
    from tlc_export.export.onnx_export import export_template, save_model
    from tlc_export.export.qdq import rewrite_weights
    from tlc_export.export.tensorrt import int8_fp16_qdq
    from tlc_export.export.validate import Batch

    folder = work / "trt-small"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    h = TRT_SMALL["hidden"]
    cfg = RobertaPreLayerNormConfig(vocab_size=1024, hidden_size=h, num_hidden_layers=TRT_SMALL["layers"],
                                    num_attention_heads=2, intermediate_size=4 * h, max_position_embeddings=130,
                                    num_labels=2, pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5)
    model = RobertaPreLayerNormForSequenceClassification(cfg).eval()
    tpl = export_template(model, folder / "graph.onnx")
    state = model.state_dict()
    fp32 = tpl.load()
    rewrite_weights(fp32, tpl.refs, {}, state)
    save_model(fp32, folder / "fp32.onnx")
    save_model(to_fp16(fp32), folder / "tensorrt-fp16.onnx")
    rng = np.random.default_rng(0)
    cal = [Batch(rng.integers(5, 1024, (4, 128)).astype(np.int64), np.ones((4, 128), np.int64)) for _ in range(4)]
    ort_quant.quantize_int8_static(folder / "fp32.onnx", folder / "static.onnx", cal)
    int8_fp16_qdq(folder / "static.onnx", folder / "tensorrt-int8.onnx")
    grid = QuantConfig(bits=4, granularity="block", group_size=64, symmetric=True)
    quantized = {n: quantize_tensor(p.detach(), grid, n) for n, p in model.named_parameters()
                 if p.dim() == 2 and "embeddings" not in n}
    save_model(int4_model(tpl.load(), tpl.refs, quantized, state, fp16=True, matmul_only=True),
               folder / "tensorrt-int4.onnx")
    return {"tensorrt-fp16": (folder / "tensorrt-fp16.onnx", "fp16"),
            "tensorrt-int8": (folder / "tensorrt-int8.onnx", "int8"),
            "tensorrt-int4": (folder / "tensorrt-int4.onnx", "int4")}


def check_tensorrt(args: argparse.Namespace) -> dict[str, Any]:
    """The files most likely to be rejected (INT8 fp16 Q/DQ, INT4 weight-only) never reached TensorRT before: each
    goes through the project's rules and a parse-only OnnxParser pass (seconds), then a small engine is built from
    each and timed at batch 1. A parse or build failure fails the check with the parser's own words."""
    try:
        import tensorrt
    except ImportError as exc:
        raise Unavailable(f"tensorrt is not importable ({exc})") from exc
    from runtime_bench.harness import BenchSettings, Variant, bench_variant
    from tlc_export.export.tensorrt import build_engine, parse_onnx, profile_shapes
    from tlc_export.export.trt_rules import check_tensorrt_onnx

    work = Path(args.work)
    files = _trt_files(work)
    figures: dict[str, Any] = {"tensorrt_version": tensorrt.__version__, "model": "{layers}L-{hidden}H".format(**TRT_SMALL),
                               "files": {}}
    problems = []
    for fmt, (path, precision) in files.items():
        rules = [str(v) for v in check_tensorrt_onnx(path, precision)]  # type: ignore[arg-type]
        parsed = parse_onnx(path)
        figures["files"][fmt] = {"rules": rules, "parsed": parsed["ok"], "parser_errors": parsed["errors"][:5],
                                 "layers": parsed["layers"]}
        if rules or not parsed["ok"]:
            problems.append(f"{fmt}: " + "; ".join(rules[:2] + [str(e) for e in parsed["errors"][:2]]))
    if problems:  # nothing to build from a file the parser rejects
        raise CheckFailed(" | ".join(problems) + f" | {json.dumps(figures, default=str)}")
    rows = []
    for fmt, (path, precision) in files.items():
        if time_left(args) < 15:
            raise OutOfTime(f"built {len(rows)} of {len(files)} small engines | {json.dumps(figures, default=str)}")
        engine = path.with_suffix(".engine")
        t0 = time.monotonic()
        info = build_engine(path, precision, profile_shapes([1], 1, 128), engine, timing_cache=work / "trt_timing.cache")
        figures["files"][fmt].update(build_s=round(time.monotonic() - t0, 1), engine_bytes=info["bytes"],
                                     timing_cache=info.get("timing_cache"))
        rows += bench_variant(Variant(f"{figures['model']}.{fmt}", engine, format=fmt, model=figures["model"],
                                      vocab_size=1024), ["tensorrt"], ["fp32"],
                              BenchSettings(batches=[1], seq_len=128, warmup=10, runs=50, device="cuda"))
    figures["rows"] = _rows_figures(rows)
    if any(r["status"] != "ok" for r in rows):
        raise CheckFailed("; ".join(f"{r['variant']}: {r['reason']}" for r in rows if r["status"] != "ok")
                          + f" | {json.dumps(figures, default=str)}")
    # An engine timed on the wrong stream shows almost nothing: even a 2-layer forward cannot take < 0.005 ms.
    if min(r["latency_ms_p50"] for r in rows) < 0.005:
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
        loss, n = T.train_step(model, optimizer, train, micro, cfg.train.lr, cfg, device, dtype)
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
    """The `gpu`-marked tests, in what is left of the budget; running out of it is `skipped` (not verified), not a
    failure: the tests did not fail, they did not finish."""
    code, text = run_capped([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                            time_left(args), cwd=REPO, env=_env())
    tail = text.strip().splitlines()[-12:]
    if code not in (0, 5):
        raise CheckFailed(" | ".join(tail))
    return {"summary": tail[-1] if tail else ""}


@dataclass(frozen=True)
class Check:
    """One GPU path: its function, its estimated seconds on one H100 (cold caches) and what it verifies."""

    name: str
    fn: Callable[[argparse.Namespace], dict[str, Any]]
    estimate_s: float
    verifies: str


# Most valuable first: cheap checks of what has never run, then the targets, then the expensive machinery.
CHECKS: tuple[Check, ...] = (
    Check("environment", check_environment, 5, "GPU, driver, CUDA and library versions; one ONNX Runtime; project imports"),
    Check("tensorrt", check_tensorrt, 40, "TensorRT rules, parse-only OnnxParser and small builds of the fp16, INT8 "
          "and INT4 files"),
    Check("onnxruntime_cuda", check_onnxruntime_cuda, 30, "ONNX Runtime's CUDA provider with IO binding (12L-768H)"),
    Check("pretrain_throughput", check_pretrain_throughput, 130, "our MLM step vs plain transformers eager and "
          "compiled at 12L-768H; model-FLOPs MFU"),
    Check("bench_torch", check_bench_torch, 80, "12L-768H classifier latency on torch-eager, torch-compile, "
          "torch-int8, torch-int4"),
    Check("translation", check_translation, 35, "Marian training on CUDA (bf16, pair files), greedy decode, BLEU"),
    Check("pretrain_resume", check_pretrain_resume, 120, "tlc run on CUDA: kill -9 and resume, budgets, compile "
          "outside the clock, no recompile (graph breaks reported)"),
    Check("pytest_gpu", check_pytest_gpu, 30, "the gpu-marked tests"),
)
BY_NAME = {c.name: c for c in CHECKS}

# docs/GPU-RESULTS.md's targets: (name, what, comparison, threshold).
TARGETS = (
    ("ours_vs_plain_eager", "pretrain 12L-768H: ours / plain HF eager", ">=", 1.25),
    ("ours_vs_plain_compiled", "pretrain 12L-768H: ours / plain HF torch.compile", ">=", 1.0),
    ("model_flops_mfu", "pretrain 12L-768H: ours, model-FLOPs MFU (stretch)", ">=", 0.45),
    ("batch1_p50_ms", "12L-768H classifier, batch 1, p50 (best backend)", "<=", 1.0),
)


def plan(only: set[str] | None = None) -> list[Check]:
    return [c for c in CHECKS if not only or c.name in only]


def plan_text(checks: list[Check]) -> str:
    lines = [f"{'#':>2}  {'check':<20} {'est. s':>6} {'at s':>6}  verifies"]
    at = 0.0
    for i, c in enumerate(checks, 1):
        at += c.estimate_s
        lines.append(f"{i:>2}  {c.name:<20} {c.estimate_s:>6.0f} {at:>6.0f}  {c.verifies}")
    lines.append(f"total {at:.0f} s ({at / 60:.1f} min; the call's limit is {CALL_LIMIT_S / 60:.0f} min)")
    return "\n".join(lines)


def run_here(check: Check, args: argparse.Namespace) -> dict[str, Any]:
    """Run one check in this process; every outcome becomes a record."""
    rec: dict[str, Any] = {"check": check.name, "status": "ok", "seconds": 0.0, "error": None, "figures": None}
    t0 = time.monotonic()
    try:
        rec["figures"] = check.fn(args)
    except Unavailable as exc:
        rec.update(status="unavailable", error=str(exc.args[0]), figures=exc.args[1] if len(exc.args) > 1 else None)
    except OutOfTime as exc:
        rec.update(status="skipped", error=f"ran out of time: {exc}")
    except Exception as exc:  # noqa: BLE001 - every check reports, none stops the others
        rec.update(status="fail", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=6)[-3000:])
    rec["seconds"] = round(time.monotonic() - t0, 1)
    return rec


def run_in_child(check: Check, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """Run one check in a child process (its own process group) killed after `timeout` seconds; the child caps
    whatever it starts by the same deadline."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as td:
        out = Path(td) / "record.json"
        cmd = [sys.executable, "-m", "runtime_bench.gpu_check", "--child", check.name, "--child-out", str(out),
               "--deadline", f"{time.time() + timeout - MARGIN_S:.3f}", *_passed_on(args)]
        try:
            code, text = run_capped(cmd, timeout, cwd=REPO, env=_env())
        except OutOfTime:
            return {"check": check.name, "status": "skipped", "seconds": round(timeout, 1), "figures": None,
                    "error": f"killed at the deadline: {timeout:.0f} s were left when it started"}
        if out.is_file():
            return json.loads(out.read_text())
        return {"check": check.name, "status": "fail", "seconds": None, "figures": None,
                "error": f"the check's process died (exit {code}): {text[-1500:]}"}


def default_runner(check: Check, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """`environment` in this process (seconds; its figures are the summary's), every other check in a child."""
    if check.name == "environment":
        args.deadline = time.time() + timeout - MARGIN_S
        return run_here(check, args)
    return run_in_child(check, args, timeout)


def _passed_on(args: argparse.Namespace) -> list[str]:
    out = ["--work", str(args.work), "--pretrain-device", args.pretrain_device, "--mt-device", args.mt_device]
    if args.pretrain_sizes:
        out += ["--pretrain-sizes", args.pretrain_sizes]
    return out


def _target_values(records: list[dict[str, Any]]) -> dict[str, tuple[float | None, str | None]]:
    figs = {r["check"]: r.get("figures") or {} for r in records if r.get("status") == "ok"}
    thr = figs.get("pretrain_throughput", {})
    ours = thr.get("ours") or {}
    values: dict[str, tuple[float | None, str | None]] = {
        "ours_vs_plain_eager": (thr.get("ratio_vs_plain"), "pretrain_throughput"),
        "ours_vs_plain_compiled": (thr.get("ratio_vs_plain_compiled"), "pretrain_throughput"),
        "model_flops_mfu": (ours.get("model_flops_mfu"), "pretrain_throughput"),
    }
    best: tuple[float | None, str | None] = (None, None)
    for name in ("bench_torch", "onnxruntime_cuda", "tensorrt"):
        for row in figs.get(name, {}).get("rows") or []:
            if row.get("model") == "12L-768H" and row.get("batch") == 1 and row.get("status") == "ok":
                if best[0] is None or row["latency_ms_p50"] < best[0]:
                    best = (row["latency_ms_p50"], f"{row['backend']} {row.get('device') or ''} {row['dtype']}".strip())
    values["batch1_p50_ms"] = best
    return values


def targets_met(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each target against its figure: met True/False, or None when not measured in this call."""
    values = _target_values(records)
    out = {}
    for name, what, op, threshold in TARGETS:
        value, source = values[name]
        if isinstance(value, float) and value != value:  # NaN: not measured
            value = None
        met = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        source = source if value is not None else None
        out[name] = {"what": what, "target": f"{op} {threshold:g}", "value": value, "by": source, "met": met}
    return out


def summary_of(records: list[dict[str, Any]], planned: list[Check], seconds: float, complete: bool) -> dict[str, Any]:
    done = {r["check"] for r in records}
    env = next((r.get("figures") for r in records if r["check"] == "environment" and r.get("figures")), None)
    not_verified = [{"check": r["check"], "verifies": BY_NAME[r["check"]].verifies, "status": r["status"],
                     "reason": r.get("error")} for r in records if r["status"] != "ok"]
    not_verified += [{"check": c.name, "verifies": c.verifies, "status": "pending",
                      "reason": "the call ended before it ran"} for c in planned if c.name not in done]
    return {
        "checks": {r["check"]: r["status"] for r in records}, "seconds": round(seconds, 1), "complete": complete,
        "ok": complete and bool(records) and all(r["status"] == "ok" for r in records),
        "targets_met": targets_met(records), "not_verified": not_verified, "environment": env,
    }


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def run_checks(args: argparse.Namespace, clock: Callable[[], float] = time.monotonic,
               runner: Callable[[Check, argparse.Namespace, float], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The planned checks in order, each given the time left (`runner(check, args, timeout)`: `default_runner`).
    A check estimated to need more than is left is skipped. checks.jsonl gets one line per check and
    summary.json is rewritten after each."""
    runner = runner or default_runner
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = out / "checks.jsonl"
    lines.write_text("")
    start = clock()
    planned = plan(set(args.only.split(",")) if args.only else None)
    records: list[dict[str, Any]] = []
    for check in planned:
        remaining = args.budget_s - (clock() - start)
        if remaining < check.estimate_s:
            rec: dict[str, Any] = {"check": check.name, "status": "skipped", "seconds": 0.0, "figures": None,
                                   "error": f"{remaining:.0f} s left of --budget-s {args.budget_s:g}, needs ~{check.estimate_s:g} s"}
        else:
            rec = runner(check, args, remaining)
        records.append(rec)
        with open(lines, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        _write_json(out / "summary.json", summary_of(records, planned, clock() - start, complete=False))
        print(json.dumps(rec, default=str), flush=True)
    _write_json(out / "summary.json", summary_of(records, planned, clock() - start, complete=True))
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime_bench.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for checks.jsonl and summary.json")
    ap.add_argument("--plan", action="store_true", help="print the checks in order with their time estimates, run nothing")
    ap.add_argument("--work", default=None, help="scratch folder for run directories and models (default: a temp dir)")
    ap.add_argument("--budget-s", type=float, default=470.0, help="skip checks that would not fit in this many seconds")
    ap.add_argument("--only", default=None, help="comma-separated check names: " + ",".join(c.name for c in CHECKS))
    ap.add_argument("--pretrain-sizes", default=None, help="pretrain_resume sizes, e.g. 4L-256H,6L-512H (the default)")
    ap.add_argument("--pretrain-device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: try pretrain_resume's machinery (tlc run, kill -9, resume) without a GPU")
    ap.add_argument("--mt-device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: try the translation check's machinery (fp32) without a GPU")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.plan:
        print(plan_text(plan(set(args.only.split(",")) if args.only else None)))
        return 0
    if args.child:  # one check, in a child process of run_in_child
        rec = run_here(BY_NAME[args.child], args)
        _write_json(Path(args.child_out), rec)
        return 0
    if not args.out:
        ap.error("--out is required (or --plan)")
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="tlc-gpu-check-")
        args.work = tmp.name
    records = run_checks(args)
    summary = json.loads(Path(args.out, "summary.json").read_text())
    print(f"\n{'check':<22} {'status':<12} {'s':>7}  error")
    for r in records:
        print(f"{r['check']:<22} {r['status']:<12} {r['seconds'] or 0:>7.1f}  {(r['error'] or '')[:90]}")
    for name, t in summary["targets_met"].items():
        print(f"target {name:<24} {t['target']:<8} value {t['value']}  met {t['met']}")
    print(json.dumps(summary, default=str))
    if tmp is not None:
        tmp.cleanup()
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
