"""The project's quantizer (`tlc_export.compress.quantize`) on encoder-decoder weights.

`quantize_` already quantizes a tied parameter once under its first name: with a shared vocabulary
the encoder, decoder and output embeddings are one table (`model.shared.weight`), quantized once,
and stay tied. What is particular to translation models is what must *not* be quantized: Marian's
sinusoidal position tables are parameters only by implementation (fixed, requires_grad False,
recomputed from the formula when a model is built), not learned weights; quantizing them would
change the model without saving anything a deployment stores.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tlc_export.compress.quantize import QuantConfig, QuantizedTensor, quantize_

FIXED_PARAMETERS = ("*embed_positions*",)


def translation_quant_config(cfg: QuantConfig) -> QuantConfig:
    """`cfg` with the fixed position tables excluded."""
    return dataclasses.replace(cfg, exclude=tuple(cfg.exclude) + tuple(p for p in FIXED_PARAMETERS if p not in cfg.exclude))


def quantize_translation_(model: Any, cfg: QuantConfig, masks: Any = None) -> dict[str, QuantizedTensor]:
    """Fake-quantize a translation model in place (learned weights only; tied tables once)."""
    return quantize_(model, translation_quant_config(cfg), masks=masks)
