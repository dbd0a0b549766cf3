"""Export a HF sequence classifier to one fp32 ONNX graph, and map its initializers back to parameters.

Every other ONNX format is derived from this one graph by rewriting initializers (same graph,
different weights): the dynamo exporter takes ~13 s per model, so it runs once per (size, sparsity).
The dynamo exporter constant-folds `W.T` of each Linear into a new initializer (`val_49`), so names
alone do not identify the parameter; `map_initializers` matches them by value (W or W.T).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from tlc_export.atomic import atomic_path, write_bytes
from tlc_export.errors import StageError
from tlc_export.models import LogitsOnly

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class InitializerRef:
    """ONNX initializer `name` holds torch parameter `param`, transposed when `transposed`."""

    name: str
    param: str
    transposed: bool


def _example_inputs(model: nn.Module, batch: int = 2, seq: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    vocab = int(getattr(model.config, "vocab_size", 100))
    ids = torch.randint(low=min(3, vocab - 1), high=vocab, size=(batch, seq), dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[-1, seq // 2 :] = 0  # a padded row, so masking is traced as data, not a constant
    return ids, mask


def strip_metadata_(model: onnx.ModelProto) -> None:
    """Drop per-node stack traces/FX names the dynamo exporter writes: they bloat the file, and file
    size is one of the things we compare between formats."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.metadata_props[:]  # the exporter's graph signature dump
    del model.graph.value_info[:]  # re-inferred by the checker; stale after initializer dtype changes


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> int:
    """Write `model` atomically as one self-contained file (no external data); returns its size."""
    data = model.SerializeToString()
    write_bytes(path, data)
    return len(data)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    opset: int = 18,
    dynamic: bool = True,
    max_seq_len: int | None = None,
) -> str:
    """Export `model` (a HF classifier) to `path`; returns the exporter used ("dynamo" or "legacy").

    Inputs `input_ids`, `attention_mask` (int64, [batch, sequence]); output `logits` (fp32).
    The legacy TorchScript exporter is used only when dynamo export fails for this model.
    """
    path = Path(path)
    wrapper = LogitsOnly(model).eval()
    args = _example_inputs(model)
    max_pos = max_seq_len or int(getattr(model.config, "max_position_embeddings", 514)) - 2
    used = "dynamo"
    with atomic_path(path, suffix=".onnx") as tmp, torch.no_grad():
        try:
            kwargs = {}
            if dynamic:
                batch = torch.export.Dim("batch", min=1, max=4096)
                seq = torch.export.Dim("sequence", min=1, max=max(2, max_pos))
                kwargs["dynamic_shapes"] = ({0: batch, 1: seq}, {0: batch, 1: seq})
            prog = torch.onnx.export(
                wrapper, args, dynamo=True, opset_version=opset,
                input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], **kwargs,
            )
            prog.save(str(tmp), external_data=False)
        except Exception as e:  # noqa: BLE001 - any dynamo failure falls back, and is recorded
            log.warning("dynamo ONNX export failed (%s); using the legacy exporter", e)
            used = "legacy"
            axes = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES} if dynamic else None
            if axes:
                axes[OUTPUT_NAME] = {0: "batch"}
            torch.onnx.export(
                wrapper, args, str(tmp), dynamo=False, opset_version=opset,
                input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], dynamic_axes=axes,
            )
        proto = onnx.load(str(tmp))
        strip_metadata_(proto)
        proto.metadata_props.add(key="tlc.exporter", value=used)
        tmp.unlink()
        tmp.write_bytes(proto.SerializeToString())
    return used


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a, dtype=np.float32).tobytes() + str(a.shape).encode()).hexdigest()


def map_initializers(onnx_model: onnx.ModelProto, torch_model: nn.Module, warn_missing: bool = True) -> dict[str, InitializerRef]:
    """Map each float ONNX initializer to the torch parameter it was exported from.

    Matched by exact value: the exporter copies parameters bit for bit, or folds `W.T` exactly.
    Only unambiguous float tensors of ≥ 2 dims or named like a parameter are mapped.
    The model must be the one the graph was exported from (before any rewriting). `warn_missing=False`
    for a graph that holds only part of the model (a translation model's encoder or decoder file).
    """
    by_value: dict[str, list[tuple[str, bool]]] = {}
    for name, p in torch_model.named_parameters():
        w = p.detach().float().cpu().numpy()
        by_value.setdefault(_digest(w), []).append((name, False))
        if w.ndim == 2:
            by_value.setdefault(_digest(w.T), []).append((name, True))
    out: dict[str, InitializerRef] = {}
    prefix = "model."
    for init in onnx_model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        arr = onnx.numpy_helper.to_array(init)
        hits = by_value.get(_digest(arr), [])
        if not hits:
            continue
        # Identical tensors (e.g. untouched LayerNorm weights = 1) are interchangeable only if the name
        # says which one it is; prefer the name match, else the first hit (its values are the same).
        stripped = init.name[len(prefix):] if init.name.startswith(prefix) else init.name
        named = [h for h in hits if h[0] == stripped and not h[1]]
        pname, tr = (named or hits)[0]
        out[init.name] = InitializerRef(init.name, pname, tr)
    weights = [n for n, p in torch_model.named_parameters() if p.dim() == 2]
    found = {r.param for r in out.values()}
    missing = [n for n in weights if n not in found]
    if missing and warn_missing:
        # Unused or value-identical parameters have no initializer of their own; numerics validation
        # catches any that mattered.
        log.warning("ONNX graph: no initializer matches parameter(s) %s", missing[:5])
    if not out:
        raise StageError(
            "ONNX graph: no initializer matches any parameter; map_initializers needs the exact model "
            "the graph was exported from (before fake-quant)"
        )
    return out


@dataclass
class GraphTemplate:
    """One exported graph whose float initializers are known by the parameter they hold."""

    path: Path
    exporter: str
    refs: dict[str, InitializerRef]

    def load(self) -> onnx.ModelProto:
        return onnx.load(str(self.path))


def _refs_path(path: Path) -> Path:
    return path.with_name(path.name + ".refs.json")


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` (fp32, eval) whose parameters hold distinct random values: exported, every
    parameter gets an initializer of its own that `map_initializers` can identify by value (tied
    parameters stay one tensor)."""
    import copy

    shadow = copy.deepcopy(model).float().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in shadow.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return shadow


def export_template(model: nn.Module, path: str | os.PathLike[str], opset: int = 18, seed: int = 0) -> GraphTemplate:
    """Export the graph once, from a copy of `model` whose parameters hold distinct random values.

    The exporter de-duplicates equal initializers (all-zero biases, all-one LayerNorm weights of an
    untrained model share one tensor); with distinct values every parameter gets its own initializer,
    so each variant can later put its own values there. Resumes from `path` + its refs file.
    """
    import json

    path = Path(path)
    refs_file = _refs_path(path)
    if path.is_file() and refs_file.is_file():
        data = json.loads(refs_file.read_text())
        refs = {k: InitializerRef(**v) for k, v in data["refs"].items()}
        return GraphTemplate(path, data["exporter"], refs)
    shadow = randomized_copy(model, seed)
    used = export_onnx(shadow, path, opset=opset)
    refs = map_initializers(onnx.load(str(path)), shadow)
    from tlc_export.atomic import write_json

    write_json(refs_file, {"exporter": used, "refs": {k: vars(v) for k, v in refs.items()}})
    return GraphTemplate(path, used, refs)
