"""One compressed variant = one safetensors file whose size on disk is the honest storage cost.

Per parameter (tied parameters once, under the first name `named_parameters()` reports):

- quantized:      `<name>::codes` (uint8, k-bit codes bit-packed, see packing.py), `<name>::scale`,
                  `<name>::offset` (float32, the grid, see quantize.py; absent for symmetric grids,
                  whose offset is 0);
- unquantized:    `<name>` (float32, dense) — or, when sparse, `<name>::values` (kept float32 values);
- sparse (a mask with zeros): only the kept codes/values are stored, in row-major order, plus either
  `<name>::mask` (np.packbits of the flattened mask, 1 bit per position) or CSR over the
  `[rows, numel/rows]` view: `<name>::indices` (column of each kept entry) and `<name>::indptr`,
  each in the smallest unsigned dtype that fits — whichever is smaller for that tensor.
- buffers in the state dict (if any): `<name>` dense, as saved.

Metadata (str -> str): `format`, `format_version`, `architecture`, `config` (the HF config JSON, so
the file alone rebuilds the model), `layout` (JSON: per-parameter kind, shape, dtype, bits, grid,
sparse encoding), `tied` (JSON alias -> stored name), the variant's bits / granularity / group_size /
symmetric / sparsity, and whatever the caller passes in `meta` (e.g. recipe_hash; non-strings are
JSON-encoded).

Recomputed parameters (`save_artifact(..., recomputed={name: rule})`): parameters that are fixed
functions of the config (Marian's sinusoidal position tables) are not stored and not counted; the model
class rebuilds them when it is constructed. Metadata `recomputed` (JSON name -> {rule, shape,
fingerprint}) records them, and `build_model` checks the rebuilt tensor against the fingerprint, so a
library whose formula changed cannot silently load a different model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from torch import nn

from tlc_export.atomic import atomic_path
from tlc_export.compress.packing import from_unsigned, pack_bits, to_unsigned, unpack_bits
from tlc_export.compress.quantize import QuantizedTensor, canonical_names
from tlc_export.errors import TlcError

FORMAT = "tlc-artifact"
FORMAT_VERSION = "1"


class ArtifactError(TlcError):
    """An artifact file is missing, not a tlc artifact, or inconsistent with its own layout."""


@dataclass
class StorageReport:
    """Storage of one variant. `storage_bytes` is the file on disk; `nonzero_bits` the paper's measure."""

    storage_bytes: int  # size of the safetensors file (header and metadata included)
    packed_code_bytes: int  # bytes of bit-packed codes (kept entries only for sparse tensors)
    nonzero_params: int  # stored (kept) parameter values
    nonzero_bits: int  # Σ kept values × their bit width (32 for unquantized parameters)
    fp32_bytes: int  # every parameter (tied once) × 4 bytes: the dense fp32 baseline
    params: int  # parameter count (tied once)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Artifact:
    """What `load_artifact` returns. `dense` holds unquantized parameters (densified) and buffers."""

    quantized: dict[str, QuantizedTensor]
    masks: dict[str, torch.Tensor]
    dense: dict[str, torch.Tensor]
    meta: dict[str, str]
    config: dict[str, Any]
    tied: dict[str, str] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return self.meta["architecture"]

    @property
    def recomputed(self) -> dict[str, dict[str, Any]]:
        """Parameters not stored (rebuilt by the model class): name -> {rule, shape, fingerprint}."""
        return json.loads(self.meta.get("recomputed", "{}"))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Weights as the in-memory fake-quant model has them (tied aliases included)."""
        sd = {n: q.dequantize() for n, q in self.quantized.items()}
        sd.update(self.dense)
        for alias, name in self.tied.items():
            sd[alias] = sd[name]
        return sd


def fingerprint(t: torch.Tensor) -> list[float]:
    """Two order-sensitive sums of a tensor (float64): equal tensors give equal numbers, and a permuted,
    shifted or rescaled table does not. Used to check recomputed parameters (`rtol` 1e-6)."""
    x = t.detach().cpu().double().reshape(-1)
    w = torch.linspace(-1.0, 1.0, x.numel(), dtype=torch.float64)
    return [float(x.abs().sum()), float((x * w).sum())]


def _fingerprint_matches(t: torch.Tensor, stored: list[float]) -> bool:
    return all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-4) for a, b in zip(fingerprint(t), stored, strict=True))


def _min_uint(max_value: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def _rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        return 1, math.prod(shape)
    return shape[0], math.prod(shape[1:])


def _encode_positions(name: str, mask: np.ndarray, shape: tuple[int, ...], out: dict[str, np.ndarray]) -> str:
    """Store where the kept entries are, as a bitmask or CSR, whichever is smaller. Returns which."""
    flat = mask.reshape(-1)
    bitmask_bytes = (flat.size + 7) // 8
    rows, cols = _rows_cols(shape)
    nnz = int(np.count_nonzero(flat))
    idx_dt, ptr_dt = _min_uint(max(cols - 1, 0)), _min_uint(nnz)
    csr_bytes = nnz * idx_dt.itemsize + (rows + 1) * ptr_dt.itemsize
    if csr_bytes < bitmask_bytes:
        m2 = flat.reshape(rows, cols)
        out[f"{name}::indices"] = np.nonzero(m2)[1].astype(idx_dt)
        out[f"{name}::indptr"] = np.concatenate([[0], np.cumsum(m2.sum(axis=1))]).astype(ptr_dt)
        return "csr"
    out[f"{name}::mask"] = np.packbits(flat)
    return "bitmask"


def _decode_positions(name: str, enc: str, shape: tuple[int, ...], f: Any) -> np.ndarray:
    n = math.prod(shape)
    if enc == "bitmask":
        return np.unpackbits(f.get_tensor(f"{name}::mask"), count=n).astype(bool).reshape(shape)
    rows, cols = _rows_cols(shape)
    indices = f.get_tensor(f"{name}::indices").astype(np.int64)
    indptr = f.get_tensor(f"{name}::indptr").astype(np.int64)
    mask = np.zeros((rows, cols), dtype=bool)
    mask[np.repeat(np.arange(rows), np.diff(indptr)), indices] = True
    return mask.reshape(shape)


def save_artifact(
    path: str | os.PathLike[str],
    model: nn.Module,
    quantized: dict[str, QuantizedTensor] | None,
    masks: dict[str, torch.Tensor] | None,
    meta: dict[str, Any],
    *,
    recomputed: Mapping[str, str] | None = None,
) -> StorageReport:
    """Write `model` (its current, already fake-quantized weights) as a packed artifact, atomically.

    `quantized` comes from `quantize_` (None = the fp32 variant); `masks` (True = kept) from pruning
    (None = dense). `recomputed` ({parameter name: rule}) names parameters the model class rebuilds
    from its config: they are neither stored nor counted (see the module docstring). Returns the
    storage accounting for the variant row.
    """
    quantized = quantized or {}
    alias = canonical_names(model)
    skip = {alias.get(n, n): rule for n, rule in (recomputed or {}).items()}
    offending = sorted(set(skip) - set(alias.values())) + sorted(set(skip) & (set(quantized) | {alias.get(n, n) for n in (masks or {})}))
    if offending:
        raise ArtifactError(
            f"{path}: recomputed parameters must be parameters of the model that are neither quantized nor pruned; "
            f"offending: {offending[:5]} (exclude them from compress.quantize / compress.prune)"
        )
    recomputed_meta: dict[str, dict[str, Any]] = {}
    cmasks = {alias.get(n, n): m.detach().cpu().to(torch.bool) for n, m in (masks or {}).items()}
    for n, q in quantized.items():
        if q.mask is not None:
            cmasks.setdefault(n, q.mask.detach().cpu())
    unknown = sorted(set(cmasks) - set(alias.values()))
    if unknown:
        raise ArtifactError(f"{path}: masks name parameters the model does not have: {unknown[:5]}")
    unknown_q = sorted(set(quantized) - set(alias.values()))
    if unknown_q:
        raise ArtifactError(f"{path}: quantized tensors name parameters the model does not have: {unknown_q[:5]}")

    tensors: dict[str, np.ndarray] = {}
    layout: dict[str, dict[str, Any]] = {}
    packed_code_bytes = nonzero_params = nonzero_bits = params = 0
    bit_set: set[int] = set()
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        if name in skip:
            recomputed_meta[name] = {"rule": skip[name], "shape": list(shape), "fingerprint": fingerprint(p)}
            continue
        params += p.numel()
        mask = cmasks.get(name)
        mask_np = mask.numpy() if mask is not None else None
        if mask_np is not None and np.count_nonzero(mask_np) == mask_np.size:
            mask_np = None  # nothing pruned: dense storage is smaller
        values = p.detach().cpu().to(torch.float32).numpy()
        if mask_np is not None and np.any(np.where(mask_np, 0.0, values)):
            # Only kept values are stored, so the file would silently differ from the model.
            raise ArtifactError(
                f"{path}: parameter {name!r} is nonzero at positions its mask prunes; apply the masks "
                "(masks.apply_masks_) and pass them to quantize_(..., masks=masks) before saving"
            )
        entry: dict[str, Any] = {"shape": list(shape), "sparse": None}
        if mask_np is not None:
            entry["sparse"] = _encode_positions(name, mask_np, shape, tensors)
        kept = int(np.count_nonzero(mask_np)) if mask_np is not None else p.numel()
        nonzero_params += kept
        q = quantized.get(name)
        if q is not None:
            if tuple(q.shape) != shape:
                raise ArtifactError(f"{path}: quantized {name!r} has shape {q.shape}, the model {shape}")
            codes = q.codes.detach().cpu().numpy().reshape(-1)
            if q.symmetric:
                codes = to_unsigned(codes, q.bits)
            if mask_np is not None:
                codes = codes[mask_np.reshape(-1)]
            packed = pack_bits(codes, q.bits)
            tensors[f"{name}::codes"] = packed
            tensors[f"{name}::scale"] = q.scale.detach().cpu().to(torch.float32).numpy()
            if not q.symmetric:  # a symmetric grid's offset is 0 by definition: not stored, not counted
                tensors[f"{name}::offset"] = q.offset.detach().cpu().to(torch.float32).numpy()
            entry.update(kind="quantized", bits=q.bits, granularity=q.granularity, group_size=q.group_size, symmetric=q.symmetric)
            packed_code_bytes += packed.size
            nonzero_bits += kept * q.bits
            bit_set.add(q.bits)
        else:
            if mask_np is not None:
                tensors[f"{name}::values"] = values[mask_np]
            else:
                tensors[name] = np.ascontiguousarray(values)
            entry.update(kind="fp32")
            nonzero_bits += kept * 32
        layout[name] = entry
    param_names = set(alias)
    for name, b in model.state_dict().items():
        if name not in param_names:
            tensors[name] = np.ascontiguousarray(b.detach().cpu().numpy())
            layout[name] = {"kind": "buffer", "shape": list(b.shape)}

    tied = {a: c for a, c in alias.items() if a != c}
    config = json.loads(model.config.to_json_string()) if hasattr(model, "config") else {}
    arch = type(model).__name__
    config["architectures"] = [arch]
    q0 = next(iter(quantized.values()), None)
    all_masks_total = sum(m.numel() for m in cmasks.values())
    all_masks_kept = sum(np.count_nonzero(m.numpy()) for m in cmasks.values())
    metadata: dict[str, str] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "config": json.dumps(config, sort_keys=True),
        "layout": json.dumps(layout),
        "tied": json.dumps(tied),
        "bits": str(max(bit_set)) if bit_set else "32",
        "granularity": q0.granularity if q0 else "none",
        "group_size": str(q0.group_size) if q0 else "0",
        "symmetric": str(bool(q0.symmetric)).lower() if q0 else "false",
        "sparsity": str(1.0 - all_masks_kept / all_masks_total if all_masks_total else 0.0),
    }
    if recomputed_meta:
        metadata["recomputed"] = json.dumps(recomputed_meta)
    if q0 is not None and q0.granularity == "per-tensor":
        # 1-D tensors are per-tensor whatever the setting: report the setting from a ≥2-D tensor.
        q2 = next((q for q in quantized.values() if len(q.shape) >= 2), q0)
        metadata["granularity"] = q2.granularity
    for k, v in meta.items():
        metadata[str(k)] = v if isinstance(v, str) else json.dumps(v, default=str)

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return StorageReport(
        storage_bytes=path.stat().st_size,
        packed_code_bytes=packed_code_bytes,
        nonzero_params=nonzero_params,
        nonzero_bits=nonzero_bits,
        fp32_bytes=params * 4,
        params=params,
    )


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read an artifact: codes unpacked (pruned positions hold the zero code), masks, dense tensors."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file; run `tlc run --stage compress` to produce it")
    try:
        f_ctx = safe_open(str(path), framework="np")
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise ArtifactError(f"{path}: not a readable safetensors file ({e}); delete it and rerun the compress stage") from e
    with f_ctx as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ArtifactError(f"{path}: metadata `format` is {meta.get('format')!r}, expected {FORMAT!r}: not a tlc artifact")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{path}: format_version {meta.get('format_version')!r}, this tlc reads {FORMAT_VERSION!r}; rerun the compress stage"
            )
        layout: dict[str, dict[str, Any]] = json.loads(meta["layout"])
        keys = set(f.keys())
        quantized: dict[str, QuantizedTensor] = {}
        masks: dict[str, torch.Tensor] = {}
        dense: dict[str, torch.Tensor] = {}
        for name, e in layout.items():
            shape = tuple(e["shape"])
            n = math.prod(shape)
            kind = e["kind"]
            if kind == "buffer":
                dense[name] = torch.from_numpy(f.get_tensor(name).copy())
                continue
            mask_np = _decode_positions(name, e["sparse"], shape, f) if e.get("sparse") else None
            kept = int(np.count_nonzero(mask_np)) if mask_np is not None else n
            if mask_np is not None:
                masks[name] = torch.from_numpy(mask_np)
            if kind == "quantized":
                bits = int(e["bits"])
                codes = unpack_bits(f.get_tensor(f"{name}::codes"), bits, kept)
                if e["symmetric"]:
                    codes = from_unsigned(codes, bits)
                scale = torch.from_numpy(f.get_tensor(f"{name}::scale").copy())
                has_offset = f"{name}::offset" in keys  # absent for symmetric grids (offset 0)
                q = QuantizedTensor(
                    codes=torch.zeros(shape, dtype=torch.int8 if e["symmetric"] else torch.uint8),
                    scale=scale,
                    offset=torch.from_numpy(f.get_tensor(f"{name}::offset").copy()) if has_offset else torch.zeros_like(scale),
                    bits=bits,
                    granularity=e["granularity"],
                    group_size=int(e["group_size"]),
                    symmetric=bool(e["symmetric"]),
                    shape=shape,
                )
                if mask_np is not None:
                    q.mask = masks[name]
                    full = q.zero_codes().numpy().reshape(-1).copy()
                    full[mask_np.reshape(-1)] = codes
                    codes = full
                q.codes = torch.from_numpy(np.ascontiguousarray(codes).reshape(shape))
                quantized[name] = q
            elif kind == "fp32":
                if mask_np is not None:
                    full = np.zeros(shape, dtype=np.float32)
                    full[mask_np] = f.get_tensor(f"{name}::values")
                    dense[name] = torch.from_numpy(full)
                else:
                    dense[name] = torch.from_numpy(f.get_tensor(name).copy())
            else:
                raise ArtifactError(f"{path}: layout entry {name!r} has unknown kind {kind!r}")
    return Artifact(
        quantized=quantized,
        masks=masks,
        dense=dense,
        meta=meta,
        config=json.loads(meta["config"]),
        tied=json.loads(meta.get("tied", "{}")),
    )


def build_model(artifact: Artifact) -> nn.Module:
    """Instantiate the HF model class named in the artifact and load its (fake-quant) weights."""
    import transformers

    cfg = dict(artifact.config)
    model_type = cfg.pop("model_type", None)
    if model_type is None:
        raise ArtifactError("artifact config has no `model_type`; it cannot rebuild a transformers model")
    cls = getattr(transformers, artifact.architecture, None)
    if cls is None:
        raise ArtifactError(f"transformers {transformers.__version__} has no class {artifact.architecture!r}")
    config = transformers.AutoConfig.for_model(model_type, **cfg)
    model = cls(config)
    sd = artifact.state_dict()
    result = model.load_state_dict(sd, strict=False)
    rebuilt = artifact.recomputed
    missing = set(result.missing_keys) - set(artifact.tied) - set(rebuilt)
    if missing or result.unexpected_keys:
        raise ArtifactError(
            f"artifact does not match {artifact.architecture}: missing {sorted(missing)[:5]}, unexpected {sorted(result.unexpected_keys)[:5]}"
        )
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, info in rebuilt.items():
        p = params.get(name)
        if p is None or list(p.shape) != info["shape"] or not _fingerprint_matches(p, info["fingerprint"]):
            raise ArtifactError(
                f"{_label(artifact)}: parameter {name!r} is not stored (rule {info['rule']!r}) and the rebuilt "
                "one differs from the scored model's; this transformers version builds it differently: rerun the "
                "compress stage with it"
            )
    return model.eval()


def _label(artifact: Artifact) -> str:
    return f"artifact of {artifact.architecture} ({artifact.meta.get('variant', 'unnamed variant')})"


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """The model stored in an artifact, with exactly the weights the fake-quant model had (eval mode)."""
    try:
        return build_model(load_artifact(path))
    except ArtifactError as e:
        if str(path) in str(e):
            raise
        raise ArtifactError(f"{path}: {e}") from e
