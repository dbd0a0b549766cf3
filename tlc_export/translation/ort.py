"""The plain onnxruntime greedy decoder of a translation model's two graphs (NumPy, no torch).

`encoder.onnx`: (input_ids, attention_mask) → encoder_hidden_states; `decoder.onnx`: (decoder_input_ids,
encoder_hidden_states, attention_mask) → logits over the whole prefix (see `tlc_export.translation.onnx`,
which writes them). Kept apart from the exporter so that serving (`tlc predict` on a translation bundle)
needs only onnxruntime, tokenizers and NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlc_export.errors import StageError
from tlc_export.translation.tokenizer import EOS_ID, PAD_ID

ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"


@dataclass
class OrtTranslator:
    """The two graphs in plain onnxruntime CPU sessions."""

    encoder: Any
    decoder: Any

    @classmethod
    def open(cls, folder: Path, threads: int | None = None) -> OrtTranslator:
        import onnxruntime as ort

        missing = [f for f in (ENCODER_FILE, DECODER_FILE) if not (folder / f).is_file()]
        if missing:
            raise StageError(f"{folder}: {', '.join(missing)} missing; export the translation model first")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        make = lambda f: ort.InferenceSession(str(folder / f), opts, providers=["CPUExecutionProvider"])  # noqa: E731
        return cls(make(ENCODER_FILE), make(DECODER_FILE))

    def greedy(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_length: int) -> np.ndarray:
        """Token ids [batch, ≤ max_length], starting with `<pad>` as `generate` returns them."""
        ids, mask = input_ids.astype(np.int64), attention_mask.astype(np.int64)
        hidden = self.encoder.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        out = np.full((ids.shape[0], 1), PAD_ID, dtype=np.int64)
        done = np.zeros(ids.shape[0], dtype=bool)
        while out.shape[1] < max_length and not done.all():
            logits = self.decoder.run(None, {"decoder_input_ids": out, "encoder_hidden_states": hidden,
                                             "attention_mask": mask})[0][:, -1]
            nxt = logits.argmax(-1).astype(np.int64)
            if out.shape[1] == max_length - 1:
                nxt[:] = EOS_ID
            nxt[done] = PAD_ID
            out = np.concatenate([out, nxt[:, None]], axis=1)
            done |= nxt == EOS_ID
        return out
