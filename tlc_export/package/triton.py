"""A Triton Inference Server model repository entry: `<name>/config.pbtxt` + `<name>/1/model.*`.

Names, data types and dims come from the ONNX graph itself. With `max_batch_size > 0` Triton adds
the batch dimension, so dims list the remaining ones: `[-1]` for the sequence, `[num_labels]` for
the logits. See Triton's model_config.proto (`inference.ModelConfig`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import onnx

# onnx.TensorProto element type -> Triton DataType name
TRITON_TYPES = {
    onnx.TensorProto.BOOL: "TYPE_BOOL", onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16", onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16", onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16", onnx.TensorProto.STRING: "TYPE_STRING",
}
PLATFORMS = {"onnx": "onnxruntime_onnx", "plan": "tensorrt_plan"}
MODEL_FILES = {"onnx": "model.onnx", "plan": "model.plan"}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, ONNX element type and shape (None = symbolic dimension)."""

    name: str
    elem_type: int
    shape: tuple[int | None, ...]

    @property
    def triton_type(self) -> str:
        try:
            return TRITON_TYPES[self.elem_type]
        except KeyError:
            raise ValueError(f"tensor {self.name}: ONNX type {onnx.TensorProto.DataType.Name(self.elem_type)} has no "
                             "Triton equivalent") from None

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "dtype": onnx.TensorProto.DataType.Name(self.elem_type).lower(),
                "shape": [d if d is not None else -1 for d in self.shape]}


def _spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    t = vi.type.tensor_type
    dims = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in t.shape.dim)
    return TensorSpec(vi.name, int(t.elem_type), dims)


def graph_io(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs (initializers excluded) and outputs, read without loading the weights."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return [_spec(i) for i in model.graph.input if i.name not in inits], [_spec(o) for o in model.graph.output]


def model_name(text: str) -> str:
    """A Triton model name (a folder name and a URL path segment): letters, digits, `_`, `-`."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    return name or "model"


def _dims(spec: TensorSpec, batched: bool, fallback_last: int | None = None) -> list[int]:
    shape = list(spec.shape[1:] if batched else spec.shape)
    if fallback_last is not None and shape and shape[-1] is None:
        shape[-1] = fallback_last
    return [d if d is not None else -1 for d in shape]


def config_pbtxt(
    name: str,
    kind: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    max_batch_size: int,
    num_labels: int | None = None,
    instance_kind: str = "KIND_CPU",
) -> str:
    """config.pbtxt text for an ONNX (`kind="onnx"`) or TensorRT plan (`kind="plan"`) model."""
    if kind not in PLATFORMS:
        raise ValueError(f"kind must be one of {sorted(PLATFORMS)}, got {kind!r}")
    batched = max_batch_size > 0

    def block(specs: list[TensorSpec], last: int | None) -> str:
        items = []
        for s in specs:
            dims = ", ".join(str(d) for d in _dims(s, batched, last))
            items.append(f'  {{\n    name: "{s.name}"\n    data_type: {s.triton_type}\n    dims: [ {dims} ]\n  }}')
        return ",\n".join(items)

    lines = [
        f'name: "{name}"',
        f'platform: "{PLATFORMS[kind]}"',
        f"default_model_filename: \"{MODEL_FILES[kind]}\"",
        f"max_batch_size: {max_batch_size}",
        "input [",
        block(inputs, None),
        "]",
        "output [",
        block(outputs, num_labels),
        "]",
    ]
    if batched:
        # Triton merges concurrent requests into one batch (up to max_batch_size); a short queue delay
        # lets requests arriving together share a run.
        lines += ["dynamic_batching {", "  max_queue_delay_microseconds: 100", "}"]
    lines += ["instance_group [", f"  {{\n    count: 1\n    kind: {instance_kind}\n  }}", "]"]
    return "\n".join(lines) + "\n"
