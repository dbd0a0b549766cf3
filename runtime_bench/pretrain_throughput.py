"""Masked-LM training throughput: our pretraining step vs plain `transformers`, eager and compiled.

    python -m runtime_bench.pretrain_throughput --sizes 4L-256H --batch 16 --seq 128 --device cpu --steps 10
    python -m runtime_bench.pretrain_throughput --sizes 12L-768H --batch 128 --micro 128   # CUDA

Every step runs on a freshly initialised model of the same size and seed, on the same rows:
- `ours`: `tlc_export.pretrain.step.TrainStep` as the pretrain stage runs it: masking on the
  device (k = round(0.15·seq) positions per row), the vocabulary head only on those positions
  (static shapes), bf16 autocast + fused AdamW on CUDA, torch.compile when compiling;
- `plain`: `model(input_ids, labels=labels).loss.backward()`, gradient clipping, `optimizer.step()`
  with the full vocabulary head and the same optimizer, autocast and clipping norm, eager;
- `plain_compiled`: the same plain model under `torch.compile`.
Both do the same work per step apart from the model itself: masks drawn on the device by the same
`DeviceMasker` (ours inside its step, plain at the top of its timed step), gradients clipped to
`pretrain.grad_clip`, one fused AdamW step. Compilation happens in warm-up steps before timing and
is reported as `compile_s`; dynamo's cache is reset once, before the first variant (a reset per
variant threw away ours' compiled graphs, which then recompiled inside the timed steps), and
`unique_graphs` (graphs each compiled variant's warm-up produced: more than one means graph
breaks) and `recompiles_after_warmup` are recorded.

Two utilisation columns (FLOPs from `tlc_export.models.mlm_flops`):
- `model-FLOPs MFU` (`model_flops_mfu`): model FLOPs counted the paper's way, 6·N·tokens + attention
  with N = non-embedding parameters + the vocab × hidden output projection: the same work for every
  step, so MFU ratios equal throughput ratios;
- `hfu`: the FLOPs each step actually computes (ours: the head only on the k masked positions
  per row; plain: the full head, = model FLOPs).
The peak comes from `runtime_bench.peaks` by exact GPU model (SXM / PCIe / NVL differ), or
`--peak-tflops`. Human table first, then one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from runtime_bench.peaks import cpu_peak, gpu_peak
from tlc_export.config.models import ModelSize
from tlc_export.config.pretrain import PretrainConfig
from tlc_export.models import build_mlm, count_params, mlm_flops
from tlc_export.pretrain.loss import MLMLoss
from tlc_export.pretrain.masking import DeviceMasker, masked_per_row
from tlc_export.pretrain.step import MaskSpec, TrainStep, autocast_dtype, make_optimizer

SPECIAL = (0, 1, 2, 3, 4)
VARIANTS = ("ours", "plain", "plain_compiled")


def device_peak(device: torch.device, cpu_ghz: float, override_tflops: float | None = None) -> tuple[float, str]:
    if override_tflops:
        return override_tflops * 1e12, f"--peak-tflops {override_tflops:g}"
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device))
    return cpu_peak(torch.get_num_threads(), cpu_ghz)


def parse_size(text: str) -> ModelSize:
    m = re.fullmatch(r"(\d+)L-(\d+)H", text)
    if not m:
        raise SystemExit(f"--sizes: '{text}' is not like 4L-256H")
    return ModelSize(layers=int(m[1]), hidden=int(m[2]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[int], Any], device: torch.device, steps: int) -> list[float]:
    times = []
    for i in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        fn(1000 + i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _graphs() -> int:
    """Graphs dynamo has compiled in this process since its last reset."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_size(size: ModelSize, args: argparse.Namespace, device: torch.device, compile_steps: bool) -> dict[str, Any]:
    cfg = PretrainConfig(time_budget_s=1, batch_size=args.batch, micro_batch_size=min(args.micro, args.batch),
                         device=device.type, compile=compile_steps)
    dtype = autocast_dtype(cfg, device)
    micro = cfg.micro_batch_size or args.batch
    spec = MaskSpec(mask_token_id=4, vocab_size=args.vocab, special_ids=SPECIAL)
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(5, args.vocab, (args.batch, args.seq), generator=gen)
    rows[:, 0], rows[:, -1] = 0, 2
    k = masked_per_row(args.seq, spec.probability)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_mlm(size, args.vocab, args.seq, dropout=0.1).to(device)

    def make_ours() -> tuple[Callable[[int], Any], float, torch.nn.Module]:
        model = fresh()
        mod = MLMLoss(model, masked_only=True, capacity=k)
        fwd = torch.compile(mod, dynamic=False) if compile_steps else None
        step = TrainStep(mod, make_optimizer(model, cfg, device), micro_batch_size=micro, device=device,
                         dtype=dtype, grad_clip=cfg.grad_clip, mask=spec, forward=fwd)
        on_device = rows.to(device)
        t0 = time.perf_counter()
        step.warmup(args.seq, args.batch)
        return (lambda i: step(on_device, 1e-4, i)), (time.perf_counter() - t0) if compile_steps else 0.0, model

    def make_plain(compiled: bool) -> tuple[Callable[[int], Any], float, torch.nn.Module]:
        model = fresh()
        opt = make_optimizer(model, cfg, device)
        fwd = torch.compile(model, dynamic=False) if compiled else model
        masker = DeviceMasker(spec, device)  # ours' masking, on the device, inside the timed step
        on_device = rows.to(device)

        def step(i: int) -> None:
            x, y = masker(on_device, i)
            for xs, ys in zip(x.split(micro), y.split(micro), strict=True):
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = fwd(input_ids=xs, labels=ys).loss
                (loss * xs.shape[0] / x.shape[0]).backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)  # as TrainStep does
            opt.step()
            opt.zero_grad(set_to_none=True)

        t0 = time.perf_counter()
        step(0)
        _sync(device)
        return step, (time.perf_counter() - t0) if compiled else 0.0, model

    makers = {"ours": make_ours, "plain": lambda: make_plain(False)}
    if compile_steps:
        makers["plain_compiled"] = lambda: make_plain(True)
    peak, peak_note = device_peak(device, args.cpu_ghz, args.peak_tflops)
    tokens = args.batch * args.seq
    out: dict[str, Any] = {"size": size.name, "peak_flops": peak, "peak_note": peak_note, "masked_per_row": k}
    steps: dict[str, Callable[[int], Any]] = {}
    compile_s: dict[str, float] = {}
    models: dict[str, torch.nn.Module] = {}
    graphs: dict[str, int] = {}
    torch._dynamo.reset()  # once: every variant's compiled graphs must survive until its timed steps
    for name, make in makers.items():
        before = _graphs()
        steps[name], compile_s[name], models[name] = make()
        for i in range(args.warmup):
            steps[name](i)
        _sync(device)
        graphs[name] = _graphs() - before
    warm_graphs = _graphs()
    flops = mlm_flops(models["ours"], args.seq)
    out["params"] = count_params(models["ours"])
    out["flops_params"] = flops.params
    # Interleave the variants so that drift in machine load hits them alike.
    times: dict[str, list[float]] = {n: [] for n in steps}
    for _ in range(2):
        for name, fn in steps.items():
            times[name] += _timed(fn, device, args.steps)
    out["recompiles_after_warmup"] = _graphs() - warm_graphs if compile_steps else None
    model_flops = flops.paper(tokens)
    for name, ts in times.items():
        step_s = statistics.median(ts)
        hw = flops.computed(tokens, args.batch * k) if name == "ours" else model_flops
        compiled = (compile_steps and name == "ours") or name == "plain_compiled"
        out[name] = {"step_ms": step_s * 1e3, "tokens_per_s": tokens / step_s,
                     "model_flops_mfu": model_flops / step_s / peak, "hfu": hw / step_s / peak,
                     "model_flops": model_flops, "hardware_flops": hw, "compile_s": round(compile_s[name], 2),
                     "compiled": compiled, "unique_graphs": graphs[name] if compiled else None}
    out["ratio_vs_plain"] = out["ours"]["tokens_per_s"] / out["plain"]["tokens_per_s"]
    if "plain_compiled" in out:
        out["ratio_vs_plain_compiled"] = out["ours"]["tokens_per_s"] / out["plain_compiled"]["tokens_per_s"]
    del steps, models
    torch._dynamo.reset()
    _free(device)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="4L-256H", help="comma-separated, e.g. 2L-128H,4L-256H")
    p.add_argument("--batch", type=int, default=16, help="sequences per optimizer step")
    p.add_argument("--micro", type=int, default=16, help="sequences per forward pass")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--steps", type=int, default=10, help="timed steps per round (two rounds each)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile ours and add the compiled plain baseline (auto: on CUDA only)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cpu-ghz", type=float, default=2.5)
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak, when the lookup does not know it")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    compile_steps = args.compile == "on" or (args.compile == "auto" and use_cuda)
    rows = [bench_size(parse_size(s), args, device, compile_steps) for s in args.sizes.split(",")]

    print(f"device {device} · {rows[0]['peak_note']} · batch {args.batch} (micro {args.micro}) · seq {args.seq} · "
          f"vocab {args.vocab} · compile {'on' if compile_steps else 'off'}")
    print("model-FLOPs MFU: the paper's model FLOPs (6·N·tokens + attention, full head); HFU: FLOPs computed")
    print(f"{'size':>10} {'step':>15} {'tok/s':>11} {'ms':>8} {'model-FLOPs MFU':>15} {'HFU':>7} {'compile s':>9} "
          f"{'graphs':>6}")
    for r in rows:
        for name in VARIANTS:
            if name not in r:
                continue
            v = r[name]
            print(f"{r['size']:>10} {name:>15} {v['tokens_per_s']:>11,.0f} {v['step_ms']:>8.1f} "
                  f"{v['model_flops_mfu']:>15.2%} {v['hfu']:>7.2%} {v['compile_s']:>9.1f} "
                  f"{'-' if v['unique_graphs'] is None else v['unique_graphs']:>6}")
        extra = f", vs plain compiled {r['ratio_vs_plain_compiled']:.2f}×" if "ratio_vs_plain_compiled" in r else ""
        print(f"{r['size']:>10} ours vs plain eager {r['ratio_vs_plain']:.2f}×{extra}")
    result = {"bench": "pretrain_throughput", "device": str(device), "batch": args.batch, "micro": args.micro,
              "seq": args.seq, "vocab": args.vocab, "compiled": compile_steps, "results": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
