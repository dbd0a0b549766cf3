"""What checksums cost on a 1 GB token file: hashing while writing, the full check, and the background check
beside a training step.

    python -m runtime_bench.verify_cost                 # 1 GB, 3 rounds
    python -m runtime_bench.verify_cost --gb 0.25 --rounds 2

1. Write: 1 GB of uint16 tokens in 4 MB appends, plain vs with `hashlib.sha256.update` on each append (what the
   token writer does), fsync'd, interleaved rounds; medians.
2. Full check (`integrity.sha256_file`): from the page cache, and cold (the file's pages dropped with
   `posix_fadvise(DONTNEED)`).
3. Stage start: `integrity.verify_stages` on a stage folder holding the file, with the background check (what the
   runner does: size check, then the thread) vs checking it before the stage starts.
4. Beside a stage: a CPU training step of a small transformer (1 torch thread), median step time alone and while
   the background check hashes the file; the slowdown ratio and the check's own time beside it.

Every figure names the machine (CPU model, cores, load average at start and end: other processes share it).
Human table first, then one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 4 << 20


def _write(path: Path, nbytes: int, hashed: bool) -> tuple[float, str | None]:
    rng = np.random.default_rng(0)
    block = rng.integers(0, 32000, CHUNK // 2, dtype=np.uint16).tobytes()
    h = hashlib.sha256() if hashed else None
    t = time.perf_counter()
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            data = block[: min(CHUNK, left)]
            f.write(data)
            if h is not None:
                h.update(data)
            left -= len(data)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t, h.hexdigest() if h else None


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _step_fn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(128, 4, 512, batch_first=True)
    model = nn.Sequential(layer, nn.Linear(128, 128))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(16, 64, 128)

    def step() -> None:
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()

    return step


def _median_step(step, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="Where to write the file (default: a temporary folder).")
    args = ap.parse_args()

    import torch

    from tlc_export import integrity
    from tlc_export.rundir import cpu_model

    torch.set_num_threads(1)
    nbytes = int(args.gb * (1 << 30))
    load_start = os.getloadavg()
    out: dict[str, Any] = {"bench": "verify_cost", "bytes": nbytes, "cpu": cpu_model(), "cores": os.cpu_count(),
                           "platform": platform.platform(), "load_avg_start": [round(x, 2) for x in load_start]}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp) / "data"
        (folder / "tokens").mkdir(parents=True)
        path = folder / "tokens" / "train.bin"

        plain, hashed = [], []
        digest = None
        for _ in range(args.rounds):
            plain.append(_write(path, nbytes, False)[0])
            t, digest = _write(path, nbytes, True)
            hashed.append(t)
        out["write_plain_s"] = statistics.median(plain)
        out["write_hashed_s"] = statistics.median(hashed)
        out["write_hash_ratio"] = out["write_hashed_s"] / out["write_plain_s"]

        warm, cold = [], []
        for _ in range(args.rounds):
            _drop_cache(path)
            t = time.perf_counter()
            assert integrity.sha256_file(path) == digest
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            integrity.sha256_file(path)
            warm.append(time.perf_counter() - t)
        out["check_cold_s"] = statistics.median(cold)
        out["check_warm_s"] = statistics.median(warm)
        out["check_warm_mb_s"] = nbytes / 1e6 / out["check_warm_s"]
        out["check_cold_mb_s"] = nbytes / 1e6 / out["check_cold_s"]

        if nbytes <= integrity.FULL_CHECK_MAX_BYTES:  # a small trial run: make the file "large"
            integrity.FULL_CHECK_MAX_BYTES = nbytes - 1
        integrity.note(path, digest)
        integrity.record_stage(folder, "data")
        start_bg, start_fg = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            check = integrity.verify_stages(folder.parent, [("data", folder)], reader="bench")
            start_bg.append(time.perf_counter() - t)
            assert check is not None
            check.finish()
            t = time.perf_counter()
            integrity.verify_stages(folder.parent, [("data", folder)], reader="bench", background=False)
            start_fg.append(time.perf_counter() - t)
        out["stage_start_background_s"] = statistics.median(start_bg)
        out["stage_start_blocking_s"] = statistics.median(start_fg)

        step = _step_fn()
        for _ in range(5):
            step()
        alone, beside, bg_secs = [], [], []
        for _ in range(args.rounds):
            alone.append(_median_step(step, 30))
            done = threading.Event()
            t0 = time.perf_counter()
            took: list[float] = []

            def hash_it(t0: float = t0, done: threading.Event = done, took: list[float] = took) -> None:
                integrity.sha256_file(path)
                took.append(time.perf_counter() - t0)
                done.set()

            th = threading.Thread(target=hash_it)
            th.start()
            times = []
            while not done.is_set():
                times.append(_median_step(step, 1))
            th.join()
            beside.append(statistics.median(times) if times else float("nan"))
            bg_secs.append(took[0])
        out["step_alone_ms"] = statistics.median(alone) * 1e3
        out["step_beside_check_ms"] = statistics.median(beside) * 1e3
        out["step_slowdown"] = out["step_beside_check_ms"] / out["step_alone_ms"]
        out["check_beside_step_s"] = statistics.median(bg_secs)
    out["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]

    gb = nbytes / (1 << 30)
    print(f"checksum cost on a {gb:.2f} GiB token file — {out['cpu']}, {out['cores']} cores, "
          f"load average {out['load_avg_start'][0]} → {out['load_avg_end'][0]} (shared machine); medians of "
          f"{args.rounds} rounds")
    rows = [
        ("write, plain (fsync'd)", f"{out['write_plain_s']:.2f} s", ""),
        ("write, sha256 while writing", f"{out['write_hashed_s']:.2f} s", f"{out['write_hash_ratio']:.2f}× plain"),
        ("full check, page cache", f"{out['check_warm_s']:.2f} s", f"{out['check_warm_mb_s']:.0f} MB/s"),
        ("full check, cold", f"{out['check_cold_s']:.2f} s", f"{out['check_cold_mb_s']:.0f} MB/s"),
        ("stage start, background check", f"{out['stage_start_background_s'] * 1e3:.1f} ms", "size checked, hash in a thread"),
        ("stage start, blocking check", f"{out['stage_start_blocking_s']:.2f} s", ""),
        ("training step alone", f"{out['step_alone_ms']:.1f} ms", "1 torch thread"),
        ("training step beside the check", f"{out['step_beside_check_ms']:.1f} ms",
         f"{out['step_slowdown']:.2f}× alone; check took {out['check_beside_step_s']:.2f} s"),
    ]
    w = max(len(r[0]) for r in rows)
    for name, val, note in rows:
        print(f"  {name:<{w}}  {val:>10}  {note}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
