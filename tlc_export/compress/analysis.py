"""Compression-error analysis (paper §5.3, Figure 9): how far quantized / pruned weights move.

For each module type, the mean and variance over all weight entries of
|W − Quantize_k(W)| (the paper's per-tensor k-bit quantizer) and |W − Prune_s(W)| (one-shot
global magnitude pruning to sparsity s: |W| where pruned, 0 elsewhere). The paper reports both
shrink with model size for *trained* models; nothing forces that for random ones, so this module
measures and does not presume.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tlc_export.atomic import atomic_path
from tlc_export.compress.quantize import QuantConfig, quantize_tensor

MODULE_TYPES: tuple[str, ...] = ("attention.qkv", "attention.out", "ffn.in", "ffn.out", "embeddings", "other")
_LABELS = {
    "attention.qkv": "attn in (Q,K,V)",
    "attention.out": "attn out",
    "ffn.in": "FFN in",
    "ffn.out": "FFN out",
    "embeddings": "embeddings",
    "other": "other",
}


def module_type(param_name: str) -> str:
    """Which Transformer module a (HF RoBERTa/BERT-style) parameter belongs to."""
    n = param_name
    if ".embeddings." in f".{n}" and "LayerNorm" not in n:
        return "embeddings"
    if any(f".attention.self.{x}." in n for x in ("query", "key", "value")):
        return "attention.qkv"
    if ".attention.output.dense." in n:
        return "attention.out"
    if ".intermediate.dense." in n:
        return "ffn.in"
    if ".layer." in n and ".output.dense." in n:
        return "ffn.out"
    return "other"


def _select(model: nn.Module, include: Sequence[str], exclude: Sequence[str], matrices_only: bool) -> list[tuple[str, torch.Tensor]]:
    out = []
    for n, p in model.named_parameters():
        if matrices_only and p.dim() < 2:
            continue
        if any(fnmatch.fnmatchcase(n, g) for g in include) and not any(fnmatch.fnmatchcase(n, g) for g in exclude):
            out.append((n, p.detach().float()))
    return out


def _global_threshold(tensors: Sequence[torch.Tensor], sparsity: float) -> float:
    """Magnitude below or at which a fraction `sparsity` of all entries lies."""
    mags = torch.cat([t.abs().reshape(-1) for t in tensors])
    k = int(round(sparsity * mags.numel()))
    if k <= 0:
        return -1.0
    return float(torch.kthvalue(mags, k).values)


@torch.no_grad()
def compression_errors(
    model: nn.Module,
    bits: int = 4,
    sparsity: float = 0.6,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    matrices_only: bool = True,
) -> list[dict[str, Any]]:
    """Rows `{module_type, tensors, params, quant_mean, quant_var, quant_std, prune_mean, prune_var, prune_std,
    quant_matrix_means, prune_matrix_means}` (the last two: one mean error per weight matrix).

    By default every weight matrix (≥ 2-D parameter, tied ones once) is analysed, as Figure 9 does
    for the Transformer's matrices; 1-D biases/LayerNorm are left out (`matrices_only=False` keeps them).
    """
    if not 0 < sparsity < 1:
        raise ValueError(f"compress.analysis.sparsity: {sparsity} must be a fraction between 0 and 1")
    cfg = QuantConfig(bits=bits)
    params = _select(model, include, exclude, matrices_only)
    if not params:
        raise ValueError("compression_errors: no parameter matched include/exclude")
    thr = _global_threshold([p for _, p in params], sparsity)
    acc: dict[str, list[float]] = {}  # type -> [tensors, n, Σq, Σq², Σp, Σp²]
    per_matrix: dict[str, tuple[list[float], list[float]]] = {}  # type -> (quant means, prune means), one per matrix
    for name, w in params:
        qerr = (w - quantize_tensor(w, cfg, name=name).dequantize()).abs().double()
        perr = torch.where(w.abs() <= thr, w.abs(), torch.zeros_like(w)).double()
        a = acc.setdefault(module_type(name), [0, 0, 0.0, 0.0, 0.0, 0.0])
        a[0] += 1
        a[1] += w.numel()
        a[2] += float(qerr.sum())
        a[3] += float((qerr * qerr).sum())
        a[4] += float(perr.sum())
        a[5] += float((perr * perr).sum())
        qm_list, pm_list = per_matrix.setdefault(module_type(name), ([], []))
        qm_list.append(float(qerr.mean()))
        pm_list.append(float(perr.mean()))
    rows = []
    for t in MODULE_TYPES:
        if t not in acc:
            continue
        ntens, n, sq, sqq, sp, spp = acc[t]
        qm, pm = sq / n, sp / n
        qv, pv = max(sqq / n - qm * qm, 0.0), max(spp / n - pm * pm, 0.0)
        rows.append(
            {
                "module_type": t,
                "tensors": int(ntens),
                "params": int(n),
                "bits": bits,
                "sparsity": sparsity,
                "quant_mean": qm,
                "quant_var": qv,
                "quant_std": qv**0.5,
                "prune_mean": pm,
                "prune_var": pv,
                "prune_std": pv**0.5,
                # One mean per weight matrix: the unit claim 5's interval resamples (entries within a
                # matrix are not independent draws; matrices of one type are the replicates).
                "quant_matrix_means": per_matrix[t][0],
                "prune_matrix_means": per_matrix[t][1],
            }
        )
    return rows


def error_table(rows_by_size: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Flatten `{size: rows}` into one JSON-able list with a `model` column."""
    return [{"model": size, **r} for size, rows in rows_by_size.items() for r in rows]


def plot_errors(rows_by_size: dict[str, list[dict[str, Any]]], path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Figure 9: two panels (quantization, pruning), bars per module type, one colour per model size,
    error bars = standard deviation. Writes a PNG atomically and returns the flat table."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in threads/headless

    types = [t for t in MODULE_TYPES if any(r["module_type"] == t for rows in rows_by_size.values() for r in rows)]
    sizes = list(rows_by_size)
    fig = Figure(figsize=(12.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(sizes))
    any_rows = next((r for rows in rows_by_size.values() for r in rows), {})
    titles = {
        "quant": f"Quantization error, {any_rows.get('bits', '?')}-bit",
        "prune": f"Pruning error, {int(round(100 * any_rows.get('sparsity', 0)))}% sparsity",
    }
    for ax, kind in zip(axes, ("quant", "prune"), strict=True):
        for i, size in enumerate(sizes):
            by_type = {r["module_type"]: r for r in rows_by_size[size]}
            xs = [j + (i - (len(sizes) - 1) / 2) * width for j in range(len(types))]
            means = [by_type[t][f"{kind}_mean"] if t in by_type else float("nan") for t in types]
            stds = [by_type[t][f"{kind}_std"] if t in by_type else 0.0 for t in types]
            ax.bar(xs, means, width=width, yerr=stds, capsize=2, label=size, color=f"C{i}")
        ax.set_xticks(range(len(types)))
        ax.set_xticklabels([_LABELS[t] for t in types], rotation=20, ha="right")
        ax.set_ylabel("mean |W − W'| (± std)")
        ax.set_ylim(bottom=0)
        ax.set_title(titles[kind])
    axes[0].legend(title="model", fontsize="small")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return error_table(rows_by_size)
