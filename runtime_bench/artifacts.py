"""What kind of artifact a path is, which backends can load it, and its vocabulary size."""

from __future__ import annotations

import json
from pathlib import Path

from runtime_bench.backends import TORCH_BACKENDS

# Safe upper bound for random timing ids when the vocabulary cannot be read from the artifact.
_FALLBACK_VOCAB = 100


def artifact_kind(path: str | Path) -> str:
    """"onnx", "tensorrt" or "torch"; raises ValueError naming the path otherwise."""
    p = Path(path)
    if p.suffix == ".onnx":
        return "onnx"
    if p.suffix in (".engine", ".plan", ".trt"):
        return "tensorrt"
    if p.suffix == ".safetensors" or (p.is_dir() and (p / "config.json").exists()):
        return "torch"
    raise ValueError(
        f"{p}: unknown artifact; give an .onnx file, a TensorRT .engine, a compress .safetensors "
        "artifact or a Hugging Face model folder"
    )


def compatible_backends(kind: str) -> tuple[str, ...]:
    return {"onnx": ("onnxruntime",), "tensorrt": ("tensorrt",), "torch": TORCH_BACKENDS}[kind]


def default_format(path: str | Path) -> str:
    """Format label: the export stage names files `<format>.onnx` / `<format>.engine`."""
    p = Path(path)
    kind = artifact_kind(p)
    if kind == "torch":
        return "torch"
    return p.stem if p.stem.startswith(("onnx", "tensorrt")) else kind


def vocab_size_of(path: str | Path) -> int:
    """The classifier's vocabulary size, so random timing ids are valid tokens."""
    p = Path(path)
    kind = artifact_kind(p)
    if kind == "torch":
        cfg = p / "config.json" if p.is_dir() else None
        if cfg is not None:
            return int(json.loads(cfg.read_text()).get("vocab_size", _FALLBACK_VOCAB))
        from safetensors import safe_open

        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
            if "config" in meta:
                return int(json.loads(meta["config"]).get("vocab_size", _FALLBACK_VOCAB))
            for k in f.keys():
                if k.endswith("word_embeddings.weight"):
                    return int(f.get_slice(k).get_shape()[0])
        return _FALLBACK_VOCAB
    if kind == "onnx":
        import onnx

        model = onnx.load(str(p), load_external_data=False)
        for init in model.graph.initializer:
            if "word_embeddings" in init.name and init.dims:
                return int(init.dims[0])
    return _FALLBACK_VOCAB
