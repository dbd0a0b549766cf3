"""ONNX export of a translation model as two graphs, and a plain onnxruntime greedy decoder.

`encoder.onnx`: (input_ids, attention_mask) → (encoder_hidden_states, cross_k.<i>, cross_v.<i>: every decoder
layer's cross-attention keys and values, [batch, heads, source, head_dim]). `decoder.onnx`: one step with a
KV cache, (decoder_input_ids [batch, 1], attention_mask, cross_k/v.<i>, past_k/v.<i> [batch, heads, steps,
head_dim]) → (logits [batch, vocab], present_k/v.<i>), so a step costs one token's work, not the whole
prefix's (without the cache, greedy decoding of 96 tokens took ~30× longer on CPU). The greedy loop follows
`generate`'s rules for these models: start from `<pad>`, take the argmax, force `</s>` at the last
position, pad finished rows (`tlc_export.tasks.translation.ort`). The export stage checks the files token for
token against the PyTorch model's own `generate` (`tlc_export.tasks.translation.export.greedy_agreement`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlc_export.atomic import atomic_path
from tlc_export.tasks.translation.ort import (  # noqa: F401
    DECODER_FILE,
    ENCODER_FILE,
    OrtTranslator,
    translate_onnx,
)
from tlc_export.tasks.translation.tokenizer import PAD_ID

log = logging.getLogger(__name__)



def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[batch, length, hidden] → [batch, heads, length, head_dim]."""
    b, n, d = x.shape
    return x.reshape(b, n, heads, d // heads).transpose(1, 2)


def _attend(attn: Any, q_in: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Marian's attention (eager form: softmax(q·kᵀ·scaling + bias)·v, then out_proj) over given keys/values."""
    q = _heads(attn.q_proj(q_in), attn.num_heads)
    scores = torch.matmul(q, k.transpose(2, 3)) * attn.scaling
    if bias is not None:
        scores = scores + bias
    out = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2)
    return attn.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class EncoderGraph(nn.Module):
    """The encoder, and every decoder layer's cross-attention keys/values of its output: computed once
    per sentence here rather than at every decoding step."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        kv = []
        for layer in self.model.model.decoder.layers:
            ca = layer.encoder_attn
            kv += [_heads(ca.k_proj(hidden), ca.num_heads), _heads(ca.v_proj(hidden), ca.num_heads)]
        return (hidden, *kv)


class DecoderGraph(nn.Module):
    """One greedy step with a KV cache: the new token attends to the cached self-attention keys/values
    (`past`, [2·layers, batch, heads, steps so far, head_dim]) and to the encoder's (`cross`); returns
    the step's logits [batch, vocab] and the cache with this step appended. Marian's decoder layer
    (post-LN), written out so that the cache is plain tensors the ONNX graph can take and give."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids: torch.Tensor, attention_mask: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dec = self.model.model.decoder
        n = 2 * len(dec.layers)
        cross, past = caches[:n], caches[n:]
        step = past[0].shape[2]
        x = dec.embed_tokens(decoder_input_ids) * dec.embed_scale
        x = x + dec.embed_positions.weight[step:step + 1].unsqueeze(0)
        # padded source positions: the most negative float, as Marian's bidirectional mask
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        present = []
        for i, layer in enumerate(dec.layers):
            sa = layer.self_attn
            k = torch.cat([past[2 * i], _heads(sa.k_proj(x), sa.num_heads)], dim=2)  # one copy per layer and step
            v = torch.cat([past[2 * i + 1], _heads(sa.v_proj(x), sa.num_heads)], dim=2)
            present += [k, v]
            x = layer.self_attn_layer_norm(x + _attend(sa, x, k, v, None))  # the newest token sees every earlier one
            x = layer.encoder_attn_layer_norm(x + _attend(layer.encoder_attn, x, cross[2 * i], cross[2 * i + 1], bias))
            x = layer.final_layer_norm(x + layer.fc2(layer.activation_fn(layer.fc1(x))))
        logits = self.model.lm_head(x[:, -1]) + self.model.final_logits_bias
        return (logits, *present)


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], names: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]], path: Path, opset: int, varargs_from: int | None = None) -> str:
    """dynamo export (the legacy TorchScript exporter when dynamo fails); returns which one ran.
    `varargs_from`: the arguments from this index on are the module's `*args` (one tuple for torch.export)."""
    with atomic_path(path, suffix=".onnx") as tmp, torch.no_grad():
        try:
            dims: dict[str, Any] = {}
            shapes = []
            for n in names:
                shapes.append({i: dims.setdefault(d, torch.export.Dim(d, min=1, max=4096)) for i, d in dynamic[n].items()})
            spec: tuple[Any, ...] = tuple(shapes)
            if varargs_from is not None:
                spec = (*spec[:varargs_from], tuple(spec[varargs_from:]))
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=names,
                                     output_names=outputs, dynamic_shapes=spec)
            prog.save(str(tmp), external_data=False)
            return "dynamo"
        except Exception as e:  # noqa: BLE001 - any dynamo failure falls back, and is recorded
            log.warning("dynamo ONNX export of %s failed (%s); using the legacy exporter", path.name, e)
            torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=opset, input_names=names,
                              output_names=outputs, dynamic_axes=dict(dynamic))
            return "legacy"


def cache_names(prefix: str, layers: int) -> list[str]:
    """`{prefix}_k.0, {prefix}_v.0, {prefix}_k.1, …`: one graph input/output per layer and side, so a step
    copies each layer's cache once (a stacked cache tensor was split and re-stacked every step)."""
    return [f"{prefix}_{kv}.{i}" for i in range(layers) for kv in ("k", "v")]


def export_translation_onnx(model: Any, folder: Path, opset: int = 18) -> dict[str, str]:
    """Write `folder/encoder.onnx` and `folder/decoder.onnx` (fp32); returns {file: exporter used}."""
    model = model.eval().to("cpu")
    c = model.config
    layers, heads = int(c.decoder_layers), int(c.decoder_attention_heads)
    ids = torch.randint(3, int(c.vocab_size), (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # a padded row: the mask is data, not a constant
    enc = EncoderGraph(model).eval()
    with torch.no_grad():
        cross = enc(ids, mask)[1:]
    past = tuple(torch.zeros(2, heads, 3, int(c.d_model) // heads) for _ in range(2 * layers))
    step_ids = torch.full((2, 1), PAD_ID, dtype=torch.long)
    cross_names, past_names = cache_names("cross", layers), cache_names("past", layers)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        ENCODER_FILE: _export(enc, (ids, mask), ["input_ids", "attention_mask"], ["encoder_hidden_states", *cross_names],
                              {"input_ids": {0: "batch", 1: "source"}, "attention_mask": {0: "batch", 1: "source"}},
                              folder / ENCODER_FILE, opset),
        DECODER_FILE: _export(DecoderGraph(model).eval(), (step_ids, mask, *cross, *past),
                              ["decoder_input_ids", "attention_mask", *cross_names, *past_names],
                              ["logits", *cache_names("present", layers)],
                              {"decoder_input_ids": {0: "batch"}, "attention_mask": {0: "batch", 1: "source"},
                               **{n: {0: "batch", 2: "source"} for n in cross_names},
                               **{n: {0: "batch", 2: "steps"} for n in past_names}},
                              folder / DECODER_FILE, opset, varargs_from=2),
    }
