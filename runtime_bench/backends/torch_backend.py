"""PyTorch backends: eager, torch.compile, and the INT8 / INT4 kernels of core PyTorch."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runtime_bench.backends.base import Backend, Dtype
from runtime_bench.backends.torch_quant import (
    Int4Config,
    Int8Config,
    Replaced,
    quantize_linears_int4_,
    quantize_linears_int8_,
)
from tlc_export.errors import StageError
from tlc_export.models import LogitsOnly

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load_torch_model(source: str | Path | nn.Module) -> nn.Module:
    """A sequence classifier from an nn.Module, a compress `.safetensors` artifact or an HF folder."""
    if isinstance(source, nn.Module):
        return source
    path = Path(source)
    if path.suffix == ".safetensors" and path.is_file():
        from tlc_export.compress.artifact import load_model

        return load_model(path)
    if path.is_dir() and (path / "config.json").exists():
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(path)
    raise StageError(
        f"{path}: not a torch model source; give a compress artifact (.safetensors) "
        "or a Hugging Face model folder (with config.json)"
    )


class TorchEager(Backend):
    name = "torch-eager"
    dtypes = ("fp32", "fp16", "bf16")
    needs_cuda = False

    def __init__(self, device: str | None = None, threads: int | None = None) -> None:
        super().__init__(device or ("cuda" if torch.cuda.is_available() else "cpu"), threads)
        self.module: nn.Module | None = None
        self._extra: dict[str, Any] = {}

    def available(self, dtype: Dtype = "fp32") -> tuple[bool, str]:
        if dtype not in self.dtypes:
            return False, f"dtype {dtype} is not supported by {self.name} (use one of {', '.join(self.dtypes)})"
        if self.cuda and not torch.cuda.is_available():
            return False, "CUDA requested but torch.cuda.is_available() is False"
        if self.needs_cuda and not self.cuda:
            return False, f"{self.name} runs CUDA kernels only; no CUDA device here"
        if dtype != "fp32" and not self.cuda:
            return False, f"{dtype} is measured on CUDA only (CPU half-precision kernels are not representative)"
        return True, ""

    def _transform(self, model: nn.Module) -> nn.Module:
        return model

    def load(self, source: str | Path | nn.Module, dtype: Dtype = "fp32") -> None:
        self.check(dtype)
        if self.threads and not self.cuda:
            torch.set_num_threads(self.threads)
        model = load_torch_model(source)
        if isinstance(source, nn.Module):
            model = copy.deepcopy(model)  # never cast or rewrite the caller's model
        model = model.eval().to(self.device, dtype=TORCH_DTYPES[dtype])
        self.dtype = dtype
        self.module = self._transform(LogitsOnly(model))

    def prepare(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self.device)
        mask = torch.from_numpy(np.ascontiguousarray(attention_mask, dtype=np.int64)).to(self.device)
        return ids, mask

    def forward(self, prepared: Any) -> Any:
        assert self.module is not None, "load() first"
        with torch.inference_mode():
            return self.module(*prepared)

    def to_numpy(self, out: Any) -> np.ndarray:
        return out.detach().float().cpu().numpy()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def close(self) -> None:
        self.module = None
        if self.cuda:
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        return {"device": self.device, "runtime_version": f"torch {torch.__version__}", **self._extra}


class TorchCompile(TorchEager):
    """torch.compile: CUDA graphs ("reduce-overhead") on CUDA, inductor's default mode on CPU.

    Dynamo's cache is process-wide with a recompile limit (8 per function): every load starts from
    a fresh cache, so one bench run's many variant × dtype × shape rows never fall back to eager,
    and close() drops the graphs and their CUDA-graph memory pools.
    """

    name = "torch-compile"

    def load(self, source: str | Path | nn.Module, dtype: Dtype = "fp32") -> None:
        torch._dynamo.reset()
        super().load(source, dtype)

    def close(self) -> None:
        self.module = None
        torch._dynamo.reset()
        super().close()

    def _transform(self, model: nn.Module) -> nn.Module:
        mode = "reduce-overhead" if self.cuda else "default"
        self._extra["compile_mode"] = mode
        # dynamic=False: one static graph per shape, as TensorRT gets one profile per batch size; otherwise the
        # second batch size (32) recompiles into a dynamic-batch graph and is timed on it.
        self._extra["compile_dynamic"] = False
        return torch.compile(model, mode=mode, dynamic=False)

    def forward(self, prepared: Any) -> Any:
        if self.cuda:
            # Each call is a new iteration: lets CUDA graphs reuse their static output buffers.
            torch.compiler.cudagraph_mark_step_begin()
        return super().forward(prepared)


class TorchInt8(TorchEager):
    """W8A8: INT8 weights (column-major) and dynamic per-row INT8 activations via torch._int_mm."""

    name = "torch-int8"
    dtypes = ("fp32", "fp16", "bf16")
    needs_cuda = True

    def _transform(self, model: nn.Module) -> nn.Module:
        self._record(quantize_linears_int8_(model, Int8Config()))
        return model

    def _record(self, rep: Replaced) -> None:
        self._extra["replaced_linears"] = len(rep.replaced)
        self._extra["kept_float_linears"] = len(rep.kept)
        if not rep.replaced:
            raise StageError(f"{self.name}: no Linear layer has a shape the kernel accepts; nothing to measure")


class TorchInt4(TorchInt8):
    """Weight-only INT4 (group 128) through tinygemm; activations in bf16."""

    name = "torch-int4"

    def _transform(self, model: nn.Module) -> nn.Module:
        # The rest of the model keeps the row's dtype; the int4 matmuls themselves run in bf16.
        self._extra["int4_activation_dtype"] = "bf16"
        self._record(quantize_linears_int4_(model, Int4Config()))
        return model
