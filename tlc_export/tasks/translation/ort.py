"""The plain onnxruntime greedy decoder of a translation model's two graphs (NumPy, no torch).

`encoder.onnx`: (input_ids, attention_mask) → encoder_hidden_states and every decoder layer's
cross-attention keys/values; `decoder.onnx`: one step with a KV cache (see `tlc_export.tasks.translation.onnx`,
which writes them and documents the names). Kept apart from the exporter so that serving (`tlc predict` on a translation bundle)
needs only onnxruntime, tokenizers and NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlc_export.errors import StageError
from tlc_export.tasks.translation.tokenizer import EOS_ID, PAD_ID

ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"


@dataclass
class OrtTranslator:
    """The two graphs in plain onnxruntime CPU sessions."""

    encoder: Any
    decoder: Any

    @classmethod
    def open(cls, folder: Path, threads: int | None = None, exact: bool = False) -> OrtTranslator:
        """Plain CPU sessions, as a deployment opens the files. `exact=True` keeps ONNX Runtime from
        fusing INT4 DequantizeLinear+MatMul into MatMulNBits with int8 activations (see
        `tlc_export.export.validate.session`), so a check sees the stored function."""
        from tlc_export.export.session import session

        missing = [f for f in (ENCODER_FILE, DECODER_FILE) if not (folder / f).is_file()]
        if missing:
            raise StageError(f"{folder}: {', '.join(missing)} missing; export the translation model first")
        return cls(session(folder / ENCODER_FILE, threads, exact), session(folder / DECODER_FILE, threads, exact))

    def greedy(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_length: int) -> np.ndarray:
        """Token ids [batch, ≤ max_length], starting with `<pad>` as `generate` returns them."""
        ids, mask = input_ids.astype(np.int64), attention_mask.astype(np.int64)
        feeds = self._start(ids, mask)
        out = np.full((ids.shape[0], 1), PAD_ID, dtype=np.int64)
        done = np.zeros(ids.shape[0], dtype=bool)
        while out.shape[1] < max_length and not done.all():
            logits = self._step(feeds, out[:, -1:])
            nxt = logits.argmax(-1).astype(np.int64)
            if out.shape[1] == max_length - 1:
                nxt[:] = EOS_ID
            nxt[done] = PAD_ID
            out = np.concatenate([out, nxt[:, None]], axis=1)
            done |= nxt == EOS_ID
        return out

    def teacher_forced_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                              decoder_input_ids: np.ndarray) -> np.ndarray:
        """Logits [batch, target, vocab] at every position of `decoder_input_ids`, step by step through the cache."""
        feeds = self._start(input_ids.astype(np.int64), attention_mask.astype(np.int64))
        ids = decoder_input_ids.astype(np.int64)
        return np.stack([self._step(feeds, ids[:, t:t + 1]) for t in range(ids.shape[1])], axis=1)

    def _start(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """The decoder's feeds before the first step: the encoder's cross keys/values, an empty cache."""
        outs = self.encoder.run(None, {"input_ids": ids, "attention_mask": mask})
        names = [o.name for o in self.encoder.get_outputs()][1:]
        feeds = {"attention_mask": mask, **dict(zip(names, outs[1:], strict=True))}
        for n in names:
            shape = list(feeds[n].shape)
            shape[2] = 0
            feeds[n.replace("cross_", "past_", 1)] = np.zeros(shape, dtype=feeds[n].dtype)
        return feeds

    def _step(self, feeds: dict[str, np.ndarray], token: np.ndarray) -> np.ndarray:
        """One decoder step; `feeds`' cache becomes the step's present cache. Returns logits [batch, vocab]."""
        outs = self.decoder.run(None, {**feeds, "decoder_input_ids": token})
        for o, value in zip(self.decoder.get_outputs()[1:], outs[1:], strict=True):
            feeds[o.name.replace("present_", "past_", 1)] = value
        return outs[0]


def translate_onnx(translator: OrtTranslator, tokenizers: Any, sources: list[str], *, max_source_length: int,
                   max_length: int, batch_size: int = 32) -> list[str]:
    """Greedy translations through the ONNX files (detokenized text, input order), batched by source
    length as `tlc_export.tasks.translation.decode.translate` batches `generate`."""
    if not sources:
        return []
    enc = tokenizers.source(list(sources), truncation=True, max_length=max_source_length)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    out = [""] * len(enc)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(enc[i]) for i in idx)
        ids = np.full((len(idx), width), PAD_ID, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for row, i in enumerate(idx):
            ids[row, :len(enc[i])] = enc[i]
            mask[row, :len(enc[i])] = 1
        gen = translator.greedy(ids, mask, max_length)
        for i, t in zip(idx, tokenizers.target.batch_decode(gen.tolist(), skip_special_tokens=True), strict=True):
            out[i] = t.strip()
    return out
