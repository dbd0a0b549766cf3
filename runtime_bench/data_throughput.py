"""Data-stage throughput and memory at scale: a generated corpus through `tlc data prepare`.

    python -m runtime_bench.data_throughput                      # 0.3 GB and 1 GB, 1 and 2 workers
    python -m runtime_bench.data_throughput --sizes-gb 0.3 --workers 2 --baseline main

For each size it writes a realistic plain-text corpus (Brown-corpus sentences recombined at random
into documents of 3-40 sentences, blank-line separated, 64 MB files), then for each worker count
runs `tlc data prepare` on it in a fresh process with an empty tokenizer cache, so every run trains
its tokenizer on the sample and writes the token files end to end. A sampler reads /proc ten times
a second and records the peak resident memory of the whole process tree (the main process plus its
tokenizer workers) and of the main process alone.

Reported per run: wall seconds of the data stage (from data/results.json), end-to-end MB/s
(corpus bytes / stage seconds), tokenize-only MB/s, tokens/s, tokenizer-training seconds, peak RSS,
and CPU seconds per MB of the whole process tree (unlike MB/s, not inflated by other load).
`--baseline REF` also runs the data stage of git revision REF (e.g. `main` before this change) on
the smallest corpus, for a same-machine comparison. Last, the step check: the same CPU training
step fed from `PackedRows` over the memory-mapped token file and from the in-memory packed array
(the previous layout), interleaved, median of each; plus the batch fetch alone at batch 8192.

Generated corpora and run folders are deleted at the end (`--keep` keeps them). Human table
first, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FILE_BYTES = 64 << 20


def brown_sentences() -> list[str]:
    from tlc_export.data.brown import detokenize, iter_files, raw_package

    return [detokenize(tokens) for _, sentences in iter_files(raw_package()) for tokens in sentences if tokens]


def make_corpus(folder: Path, nbytes: int, sentences: list[str], seed: int = 0) -> int:
    """Plain-text files of random Brown sentences grouped into documents; returns the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    total, part = 0, 0
    while total < nbytes:
        chunks, size = [], 0
        while size < min(FILE_BYTES, nbytes - total):
            doc = " ".join(rng.choices(sentences, k=rng.randint(3, 40))) + "\n\n"
            chunks.append(doc)
            size += len(doc.encode("utf-8"))
        (folder / f"part-{part:04d}.txt").write_text("".join(chunks), encoding="utf-8")
        total += size
        part += 1
    return total


class TreeRSS(threading.Thread):
    """Peak RSS of a process and all its descendants, sampled from /proc."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_total = self.peak_main = 0
        self.stop = threading.Event()

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def run(self) -> None:
        while not self.stop.is_set():
            main = self._rss(self.pid)
            total = sum(self._rss(p) for p in self._tree())
            self.peak_main, self.peak_total = max(self.peak_main, main), max(self.peak_total, total)
            self.stop.wait(self.interval)


def recipe_text(vocab: int, workers: int | None) -> str:
    data = "{sources: [{kind: text, path: 'corpus/*.txt'}], max_seq_len: 128" + (
        f", workers: {workers}}}" if workers else "}")
    return (f"name: bench\ndata: {data}\ntokenizer: {{vocab_size: {vocab}}}\n"
            "models: {sizes: [{layers: 2, hidden: 128}]}\npretrain: {time_budget_s: 1}\n")


def run_stage(corpus: Path, workdir: Path, vocab: int, workers: int | None, baseline: Path | None) -> dict[str, Any]:
    """One data stage in a fresh process with an empty tokenizer cache; timings and peak memory."""
    case = Path(tempfile.mkdtemp(prefix="case-", dir=workdir))
    (case / "corpus").symlink_to(corpus.resolve(), target_is_directory=True)
    recipe = case / "bench.yaml"
    recipe.write_text(recipe_text(vocab, None if baseline else workers))
    env = {**os.environ, "TLC_HOME": str(case / "home"), "PYTHONUNBUFFERED": "1"}
    if baseline is not None:  # the old code: no `data prepare` stage run, no workers setting
        env["PYTHONPATH"] = str(baseline)
        cmd = [sys.executable, "-m", "tlc_export", "run", str(recipe), "--run-dir", str(case / "run"), "--until", "data"]
    else:
        cmd = [sys.executable, "-m", "tlc_export", "data", "prepare", str(recipe), "--run-dir", str(case / "run")]
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, cwd=case, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeRSS(proc.pid)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the process and its workers, once reaped
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"data stage failed ({' '.join(cmd)}):\n{output[-3000:]}")
    results = json.loads((case / "run" / "data" / "results.json").read_text())
    return {"case": case, "wall_s": wall, "results": results, "peak_rss_total": sampler.peak_total,
            "peak_rss_main": sampler.peak_main, "cpu_s": cpu_s}


def step_check(tokens_dir: Path, seq_len: int = 128, rounds: int = 3, steps: int = 10) -> dict[str, Any]:
    """The same CPU training step fed from the memmap (PackedRows) and from an in-memory packed array."""
    import numpy as np
    import torch

    from tlc_export.config.models import ModelSize
    from tlc_export.config.pretrain import PretrainConfig
    from tlc_export.data.mlm import MLMBatches, PackedRows, pack_sequences
    from tlc_export.data.token_files import TokenSplit
    from tlc_export.models import build_mlm
    from tlc_export.pretrain.loss import MLMLoss
    from tlc_export.pretrain.step import MaskSpec, TrainStep, make_optimizer

    split = TokenSplit.open(tokens_dir, "train")
    vocab = int(split.header["vocab_size"])
    mapped = PackedRows(split.ids, seq_len, 0, 2)
    in_memory = pack_sequences(np.fromfile(tokens_dir / "train.bin", dtype=split.ids.dtype).astype(np.int32),
                               seq_len, 0, 2)
    torch.manual_seed(0)
    model = build_mlm(ModelSize(layers=2, hidden=128), vocab, seq_len, dropout=0.0)
    cfg = PretrainConfig(time_budget_s=1, batch_size=16, micro_batch_size=16)
    step = TrainStep(MLMLoss(model), make_optimizer(model, cfg, torch.device("cpu")), micro_batch_size=16,
                     device=torch.device("cpu"), dtype=None, grad_clip=1.0, mask=MaskSpec(4, vocab, (0, 1, 2, 3, 4)))
    times: dict[str, list[float]] = {"memmap": [], "in_memory": []}
    fetch: dict[str, list[float]] = {"memmap": [], "in_memory": []}
    streams = {"memmap": MLMBatches(mapped, 16, seed=0), "in_memory": MLMBatches(in_memory, 16, seed=0)}
    big = {"memmap": MLMBatches(mapped, 8192, seed=1), "in_memory": MLMBatches(in_memory, 8192, seed=1)}
    step(streams["memmap"].next_batch(), 1e-4, 0)  # warm-up
    # Alternate step by step, so drifting load on a shared machine hits both sides alike.
    for i in range(rounds * steps):
        for name in ("memmap", "in_memory"):
            t0 = time.perf_counter()
            step(streams[name].next_batch(), 1e-4, i)
            times[name].append(time.perf_counter() - t0)
            if i % 5 == 0:
                t0 = time.perf_counter()
                big[name].next_batch()
                fetch[name].append(time.perf_counter() - t0)
    return {
        "model": "2L-128H", "batch": 16, "seq_len": seq_len, "steps_each": rounds * steps,
        "step_ms_memmap": 1e3 * statistics.median(times["memmap"]),
        "step_ms_in_memory": 1e3 * statistics.median(times["in_memory"]),
        "fetch_ms_8192_memmap": 1e3 * statistics.median(fetch["memmap"]),
        "fetch_ms_8192_in_memory": 1e3 * statistics.median(fetch["in_memory"]),
        "in_memory_array_mb": in_memory.nbytes / 1e6,
    }


def export_revision(ref: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "tlc_export"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-gb", type=float, nargs="+", default=[0.3, 1.0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--vocab", type=int, default=32768, help="BPE vocabulary (paper-roberta.yaml: 32768)")
    ap.add_argument("--workdir", type=Path, default=None, help="where corpora and runs go (default: a temp dir)")
    ap.add_argument("--baseline", default=None, help="also run git revision REF's data stage on the smallest size")
    ap.add_argument("--no-step-check", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the generated corpora and run folders")
    args = ap.parse_args()

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="tlc-data-bench-", dir=args.workdir))
    rows: list[dict[str, Any]] = []
    steps: dict[str, Any] | None = None
    try:
        sentences = brown_sentences()
        baseline = export_revision(args.baseline, workdir / "baseline") if args.baseline else None
        for gb in sorted(args.sizes_gb):
            corpus = workdir / f"corpus-{gb:g}GB"
            t0 = time.perf_counter()
            nbytes = make_corpus(corpus, int(gb * 1e9), sentences)
            print(f"generated {nbytes / 1e9:.2f} GB in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
            configs: list[tuple[str, int | None]] = [("tlc", w) for w in args.workers]
            if baseline is not None and gb == min(args.sizes_gb):
                configs.insert(0, (f"baseline {args.baseline}", None))
            for code, workers in configs:
                r = run_stage(corpus, workdir, args.vocab, workers, baseline if code != "tlc" else None)
                res = r["results"]
                tokens = sum(res["tokens"].values())
                seconds = res["seconds"]
                tok_s = res.get("tokenizer", {}).get("seconds")
                row = {
                    "code": code, "corpus_gb": round(nbytes / 1e9, 3), "workers": res.get("workers", 1),
                    "stage_s": seconds, "wall_s": round(r["wall_s"], 1), "mb_per_s": nbytes / 1e6 / seconds,
                    "tokenize_mb_per_s": res.get("tokenize_mb_per_s"), "tokens": tokens,
                    "tokens_per_s": tokens / seconds, "tokenizer_train_s": tok_s,
                    "peak_rss_mb": r["peak_rss_total"] / 1e6, "peak_rss_main_mb": r["peak_rss_main"] / 1e6,
                    # CPU time of the whole process tree: the load-independent cost on a shared machine.
                    "cpu_s_per_mb": r["cpu_s"] / (nbytes / 1e6),
                }
                rows.append(row)
                print(f"  {code} {gb:g} GB, {row['workers']} worker(s): {seconds:.0f}s, {row['mb_per_s']:.2f} MB/s, "
                      f"peak RSS {row['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
                tokens_dir = r["case"] / "run" / "data" / "tokens"
                if code == "tlc" and steps is None and not args.no_step_check and tokens_dir.is_dir():
                    steps = step_check(tokens_dir)
                if not args.keep:
                    shutil.rmtree(r["case"], ignore_errors=True)
            if not args.keep:
                shutil.rmtree(corpus, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"\nData stage (`tlc data prepare`), vocab {args.vocab}, {os.cpu_count()} cores ({cpu}), "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    head = ("code", "GB", "workers", "stage s", "MB/s", "tokenize MB/s", "tokens/s", "tok. train s", "peak RSS MB",
            "main RSS MB", "CPU s/MB")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [r["code"], f"{r['corpus_gb']:.2f}", r["workers"], f"{r['stage_s']:.0f}", f"{r['mb_per_s']:.2f}",
                 "-" if r["tokenize_mb_per_s"] is None else f"{r['tokenize_mb_per_s']:.2f}",
                 f"{r['tokens_per_s']:,.0f}", "-" if r["tokenizer_train_s"] is None else f"{r['tokenizer_train_s']:.0f}",
                 f"{r['peak_rss_mb']:.0f}", f"{r['peak_rss_main_mb']:.0f}", f"{r['cpu_s_per_mb']:.2f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if steps:
        print(f"\nTraining step ({steps['model']}, batch {steps['batch']}, seq {steps['seq_len']}, CPU, median of "
              f"{steps['steps_each']}): memmap {steps['step_ms_memmap']:.1f} ms, in-memory "
              f"{steps['step_ms_in_memory']:.1f} ms; batch fetch at 8192 rows: memmap "
              f"{steps['fetch_ms_8192_memmap']:.1f} ms, in-memory {steps['fetch_ms_8192_in_memory']:.1f} ms "
              f"(the in-memory layout held a {steps['in_memory_array_mb']:.0f} MB array per process)")
    print(json.dumps({"benchmark": "data_throughput", "vocab": args.vocab, "cpu": cpu, "cores": os.cpu_count(),
                      "rows": rows, "step_check": steps}))


if __name__ == "__main__":
    main()
