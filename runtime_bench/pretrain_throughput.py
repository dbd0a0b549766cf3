"""Masked-LM training throughput: our pretraining step vs a plain `transformers` eager step.

    python -m runtime_bench.pretrain_throughput --sizes 4L-256H --batch 16 --seq 128 --device cpu --steps 10

Both steps run on the same freshly initialised model, batch and masks in the same process:
- ours: `tlc_export.pretrain.step.TrainStep` (masked-only head, bf16 autocast + fused AdamW on
  CUDA, optional torch.compile), as the pretrain stage runs it;
- plain: `model(input_ids, labels=labels).loss.backward(); optimizer.step()` with the full
  vocabulary head, fp32 on CPU / bf16 autocast on CUDA, unfused AdamW.
Masking is timed in both. MFU = model FLOPs per second / device peak, with model FLOPs from
`tlc_export.models.train_flops` (the same for both steps, so MFU ratio = throughput ratio).

Peak estimates: H100 SXM bf16 dense 989 TFLOP/s, H200 989, A100 312 (NVIDIA data sheets). CPU:
cores × 2 FMA units × 8 fp32 lanes (AVX2) × 2 FLOPs × clock (default 2.5 GHz, override with
--cpu-ghz); AVX-512 machines have 16 lanes. Human table first, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from typing import Any

import torch

from tlc_export.config.models import ModelSize
from tlc_export.config.pretrain import PretrainConfig
from tlc_export.data.mlm import mask_tokens
from tlc_export.models import build_mlm, count_params, train_flops
from tlc_export.pretrain.loss import MLMLoss
from tlc_export.pretrain.step import MaskSpec, TrainStep, autocast_dtype, make_optimizer

GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
SPECIAL = (0, 1, 2, 3, 4)


def device_peak(device: torch.device, cpu_ghz: float) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_PEAK_BF16.items():
            if key in name:
                return peak, f"{name} bf16 dense"
        return float("nan"), f"{name} (peak unknown)"
    cores = torch.get_num_threads()
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    lanes = 16 if "avx512f" in flags else 8
    return cores * 2 * lanes * 2 * cpu_ghz * 1e9, f"{cores} cores × 2 FMA × {lanes} fp32 lanes × {cpu_ghz} GHz"


def parse_size(text: str) -> ModelSize:
    m = re.fullmatch(r"(\d+)L-(\d+)H", text)
    if not m:
        raise SystemExit(f"--sizes: '{text}' is not like 4L-256H")
    return ModelSize(layers=int(m[1]), hidden=int(m[2]))


def bench_size(size: ModelSize, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    cfg = PretrainConfig(time_budget_s=1, batch_size=args.batch, micro_batch_size=min(args.micro, args.batch),
                         compile=args.compile, device=device.type)
    dtype = autocast_dtype(cfg, device)
    spec = MaskSpec(mask_token_id=4, vocab_size=args.vocab, special_ids=SPECIAL)
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(5, args.vocab, (args.batch, args.seq), generator=gen)
    rows[:, 0], rows[:, -1] = 0, 2

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_mlm(size, args.vocab, args.seq, dropout=0.1).to(device)

    model = fresh()
    mod = MLMLoss(model, masked_only=True)
    ours = TrainStep(mod, make_optimizer(model, cfg, device), micro_batch_size=cfg.micro_batch_size or args.batch,
                     device=device, dtype=dtype, grad_clip=cfg.grad_clip, mask=spec,
                     forward=torch.compile(mod) if args.compile and device.type == "cuda" else None)

    plain_model = fresh()
    plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-4)
    mask_gen = torch.Generator()

    def plain(seed: int) -> None:
        mask_gen.manual_seed(seed)
        x, y = mask_tokens(rows, mask_token_id=4, vocab_size=args.vocab, special_ids=SPECIAL, generator=mask_gen)
        x, y = x.to(device), y.to(device)
        for xs, ys in zip(x.split(args.micro), y.split(args.micro), strict=True):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = plain_model(input_ids=xs, labels=ys).loss
            (loss * xs.shape[0] / x.shape[0]).backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    def timed(fn: Any) -> list[float]:
        for i in range(args.warmup):
            fn(i)
        times = []
        for i in range(args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(1000 + i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return times

    # Interleave the two so that drift in machine load hits both alike.
    t_ours, t_plain = [], []
    for _ in range(2):
        t_ours += timed(lambda i: ours(rows, 1e-4, i))
        t_plain += timed(plain)
    tokens = args.batch * args.seq
    flops = train_flops(count_params(model, non_embedding=True) + args.vocab * size.hidden, tokens,
                        size.layers, size.hidden, args.seq)
    peak, peak_note = device_peak(device, args.cpu_ghz)
    out: dict[str, Any] = {"size": size.name, "params": count_params(model), "peak_flops": peak, "peak_note": peak_note}
    for name, ts in (("ours", t_ours), ("plain", t_plain)):
        step_s = statistics.median(ts)
        out[name] = {"step_ms": step_s * 1e3, "tokens_per_s": tokens / step_s, "mfu": flops / step_s / peak}
    out["ratio"] = out["ours"]["tokens_per_s"] / out["plain"]["tokens_per_s"]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="4L-256H", help="comma-separated, e.g. 2L-128H,4L-256H")
    p.add_argument("--batch", type=int, default=16, help="sequences per optimizer step")
    p.add_argument("--micro", type=int, default=16, help="sequences per forward pass")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--steps", type=int, default=10, help="timed steps per round (two rounds each)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="torch.compile our step (CUDA)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cpu-ghz", type=float, default=2.5)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    rows = [bench_size(parse_size(s), args, device) for s in args.sizes.split(",")]

    print(f"device {device} · {rows[0]['peak_note']} · batch {args.batch} · seq {args.seq} · vocab {args.vocab}")
    print(f"{'size':>10} {'params':>10} {'ours tok/s':>11} {'plain tok/s':>12} {'ours ms':>8} {'plain ms':>9} "
          f"{'ours MFU':>9} {'plain MFU':>10} {'ratio':>6}")
    for r in rows:
        o, pl = r["ours"], r["plain"]
        print(f"{r['size']:>10} {r['params']:>10,} {o['tokens_per_s']:>11,.0f} {pl['tokens_per_s']:>12,.0f} "
              f"{o['step_ms']:>8.1f} {pl['step_ms']:>9.1f} {o['mfu']:>9.2%} {pl['mfu']:>10.2%} {r['ratio']:>6.2f}")
    print(json.dumps({"bench": "pretrain_throughput", "device": str(device), "batch": args.batch, "seq": args.seq,
                      "vocab": args.vocab, "results": rows}))


if __name__ == "__main__":
    main()
