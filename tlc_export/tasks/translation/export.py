"""Translation ONNX files that hold a variant's own weights, and their checks against PyTorch.

The encoder/decoder pair (`tlc_export.tasks.translation.onnx`) is exported once per size, from a copy with
distinct random parameters (`randomized_copy`), so every parameter owns an initializer that
`map_initializers` finds by value; each variant's files are that pair with the variant's weights
written in (`rewrite_weights`, the classification export's machinery): fp32 values, or the compress
stage's INT8/INT4 codes + DequantizeLinear. The shared vocabulary's one table feeds the decoder's
Gather and the Transpose of its output layer: it gets codes there too (`TRANSLATION_SLOTS`), so the
largest tensor is stored as codes once per file.

Checks:
- `greedy_agreement`: greedy token ids of the files against `generate` (greedy) of a PyTorch model on
  the same sentences: identical sentences and position-wise token agreement;
- `teacher_forced_check`: decoder logits on a teacher-forced batch (every target position of real
  tokens) against the PyTorch model's, max |Δ| within tolerance × max(1, max |logit|).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from tlc_export.atomic import write_json
from tlc_export.errors import ExportMismatchError, OutputMismatch, StageError
from tlc_export.export.onnx_export import (
    InitializerRef,
    map_initializers,
    randomized_copy,
    save_model,
    strip_metadata_,
)
from tlc_export.export.qdq import WEIGHT_SLOTS
from tlc_export.tasks.translation.onnx import (
    DECODER_FILE,
    ENCODER_FILE,
    OrtTranslator,
    export_translation_onnx,
)
from tlc_export.tasks.translation.tokenizer import EOS_ID, PAD_ID

log = logging.getLogger(__name__)

FILES = (ENCODER_FILE, DECODER_FILE)
TRANSLATION_SLOTS = frozenset(WEIGHT_SLOTS | {("Transpose", 0)})
REFS_FILE = "refs.json"


@dataclass
class TranslationTemplate:
    """The exported encoder/decoder pair of one size, its initializers known by parameter."""

    folder: Path
    exporter: dict[str, str]
    refs: dict[str, dict[str, InitializerRef]]

    def load(self, file: str) -> onnx.ModelProto:
        return onnx.load(str(self.folder / file))


def export_template(model: Any, folder: Path, opset: int = 18, seed: int = 0) -> TranslationTemplate:
    """Export the pair once from a randomized copy of `model`; resumes from `folder` (files + refs.json)."""
    refs_file = folder / REFS_FILE
    if refs_file.is_file() and all((folder / f).is_file() for f in FILES):
        data = json.loads(refs_file.read_text())
        return TranslationTemplate(folder, data["exporter"],
                                   {f: {k: InitializerRef(**v) for k, v in r.items()} for f, r in data["refs"].items()})
    shadow = randomized_copy(model)
    used = export_translation_onnx(shadow, folder, opset=opset)
    refs: dict[str, dict[str, InitializerRef]] = {}
    for f in FILES:
        proto = onnx.load(str(folder / f))
        strip_metadata_(proto)  # stack traces bloat the files whose sizes we compare
        save_model(proto, folder / f)
        refs[f] = map_initializers(proto, shadow, warn_missing=False)
    found = {r.param for file_refs in refs.values() for r in file_refs.values()}
    missing = [n for n, p in shadow.named_parameters() if p.dim() == 2 and n not in found]
    if missing:
        log.warning("translation ONNX pair: no initializer holds %s (the checks catch any that matters)", missing[:5])
    write_json(refs_file, {"exporter": used, "refs": {f: {k: vars(v) for k, v in r.items()} for f, r in refs.items()}})
    return TranslationTemplate(folder, used, refs)


def write_variant(template: TranslationTemplate, folder: Path, state: Mapping[str, torch.Tensor],
                  quantized: Mapping[str, Any] | None = None, container: str = "fp32") -> int:
    """`folder/encoder.onnx` + `decoder.onnx` with the variant's weights: `state` (every parameter's value,
    e.g. the variant model's state_dict) and, for container "int8"/"int4", its codes `quantized`.
    Returns the bytes of both files."""
    from tlc_export.export.int4 import int4_model
    from tlc_export.export.qdq import rewrite_weights

    if container not in ("fp32", "int8", "int4"):
        raise StageError(f"unknown container {container!r}; expected fp32, int8 or int4")
    if container != "fp32" and not quantized:
        raise StageError(f"{folder}: an {container} file needs the variant's codes; its artifact holds none")
    codes = dict(quantized or {}) if container != "fp32" else {}
    total = 0
    for f in FILES:
        refs = template.refs[f]
        if container == "int4":
            proto = int4_model(template.load(f), refs, codes, state, slots=TRANSLATION_SLOTS)
        else:
            proto = template.load(f)
            rewrite_weights(proto, refs, codes, state, container="int8", slots=TRANSLATION_SLOTS)
        total += save_model(proto, folder / f)
    return total


def files_bytes(folder: Path) -> int:
    return sum((folder / f).stat().st_size for f in FILES)


def _encode(tokenizers: Any, sources: Sequence[str], max_source_length: int) -> dict[str, np.ndarray]:
    enc = tokenizers.source(list(sources), truncation=True, max_length=max_source_length, padding=True, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def _until_eos(ids: np.ndarray) -> list[int]:
    """Generated tokens after the start token, up to and including the first `</s>`."""
    out = []
    for t in ids.tolist()[1:]:
        out.append(t)
        if t == EOS_ID:
            break
    return out


def greedy_agreement(model: Any, translator: OrtTranslator, tokenizers: Any, sources: Sequence[str], *,
                     max_source_length: int, max_length: int, batch_size: int = 16) -> dict[str, Any]:
    """Greedy token ids of `translator` vs `model.generate` (greedy), sentence by sentence:
    `identical` sentences, `mismatched` indices, `token_agreement` = matching positions / longer length."""
    from tlc_export.config.translation import TranslationDecoding
    from tlc_export.tasks.translation.decode import generation_kwargs

    kw = generation_kwargs(TranslationDecoding(strategy="greedy", max_length=max_length))
    model = model.eval().to("cpu")
    mismatched: list[int] = []
    same = total = 0
    for start in range(0, len(sources), batch_size):
        enc = _encode(tokenizers, sources[start:start + batch_size], max_source_length)
        ours = translator.greedy(enc["input_ids"], enc["attention_mask"], max_length)
        with torch.inference_mode():
            ref = model.generate(input_ids=torch.from_numpy(enc["input_ids"]),
                                 attention_mask=torch.from_numpy(enc["attention_mask"]), **kw).numpy()
        for i in range(len(ours)):
            a, b = _until_eos(ours[i]), _until_eos(ref[i])
            same += sum(x == y for x, y in zip(a, b, strict=False))
            total += max(len(a), len(b), 1)
            if a != b:
                mismatched.append(start + i)
    n = len(sources)
    return {"sentences": n, "identical": n - len(mismatched), "mismatched": mismatched,
            "token_agreement": same / max(1, total)}


def teacher_forced_batch(tokenizers: Any, pairs: Sequence[Any], max_source_length: int,
                         max_target_length: int) -> dict[str, np.ndarray]:
    """Sources, `<pad> y…` decoder inputs and the mask of real target positions for `pairs`."""
    enc = _encode(tokenizers, [p.source for p in pairs], max_source_length)
    tgt = tokenizers.target([p.target for p in pairs], truncation=True, max_length=max_target_length)["input_ids"]
    width = max(len(t) for t in tgt)
    dec = np.full((len(tgt), width), PAD_ID, dtype=np.int64)
    valid = np.zeros((len(tgt), width), dtype=bool)
    for i, t in enumerate(tgt):
        dec[i, 1:len(t)] = t[:-1]  # the decoder sees the target shifted right, starting from <pad>
        valid[i, :len(t)] = True
    return {**enc, "decoder_input_ids": dec, "valid": valid}


def teacher_forced_check(model: Any, translator: OrtTranslator, batch: Mapping[str, np.ndarray],
                         tolerance: float | None, artifact: str) -> dict[str, float]:
    """Max |Δ logit| of the files vs `model` over the real target positions of `batch`; raises
    ExportMismatchError beyond `tolerance` × max(1, max |logit|) (None: only measure)."""
    got = translator.teacher_forced_logits(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"])
    with torch.inference_mode():
        ref = model.eval()(input_ids=torch.from_numpy(batch["input_ids"]),
                           attention_mask=torch.from_numpy(batch["attention_mask"]),
                           decoder_input_ids=torch.from_numpy(batch["decoder_input_ids"])).logits.float().numpy()
    valid = batch["valid"]
    d = float(np.abs(got[valid] - ref[valid]).max())
    scale = float(np.abs(ref[valid]).max())
    out = {"max_abs_diff": d, "logit_scale": scale}
    if tolerance is None:
        return out
    tol = tolerance * max(1.0, scale)
    if not np.isfinite(d) or d > tol:
        raise ExportMismatchError(artifact, [OutputMismatch("logits (teacher-forced)", d, tol)])
    return {**out, "tolerance": tol}
