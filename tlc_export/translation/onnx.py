"""ONNX export of a translation model as two graphs, and a plain onnxruntime greedy decoder.

`encoder.onnx`: (input_ids, attention_mask) → (encoder_hidden_states, cross_kv: every decoder layer's
cross-attention keys and values, [2·layers, batch, heads, source, head_dim]). `decoder.onnx`: one step with
a KV cache, (decoder_input_ids [batch, 1], attention_mask, cross_kv, past_kv [2·layers, batch, heads,
steps, head_dim]) → (logits [batch, vocab], present_kv), so a step costs one token's work, not the whole
prefix's (without the cache, greedy decoding of 96 tokens took ~30× longer on CPU). The greedy loop follows
`generate`'s rules for these models: start from `<pad>`, take the argmax, force `</s>` at the last
position, pad finished rows. `validate_greedy` checks the files token for token against the PyTorch
model's own `generate` on the same sentences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlc_export.atomic import atomic_path
from tlc_export.errors import StageError
from tlc_export.translation.tokenizer import EOS_ID, PAD_ID

log = logging.getLogger(__name__)

ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"


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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        kv = []
        for layer in self.model.model.decoder.layers:
            ca = layer.encoder_attn
            kv += [_heads(ca.k_proj(hidden), ca.num_heads), _heads(ca.v_proj(hidden), ca.num_heads)]
        return hidden, torch.stack(kv)


class DecoderGraph(nn.Module):
    """One greedy step with a KV cache: the new token attends to the cached self-attention keys/values
    (`past`, [2·layers, batch, heads, steps so far, head_dim]) and to the encoder's (`cross`); returns
    the step's logits [batch, vocab] and the cache with this step appended. Marian's decoder layer
    (post-LN), written out so that the cache is plain tensors the ONNX graph can take and give."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids: torch.Tensor, attention_mask: torch.Tensor, cross: torch.Tensor,
                past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dec = self.model.model.decoder
        step = past.shape[3]
        x = dec.embed_tokens(decoder_input_ids) * dec.embed_scale
        x = x + dec.embed_positions.weight[step:step + 1].unsqueeze(0)
        # padded source positions: the most negative float, as Marian's bidirectional mask
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        present = []
        for i, layer in enumerate(dec.layers):
            sa = layer.self_attn
            k = torch.cat([past[2 * i], _heads(sa.k_proj(x), sa.num_heads)], dim=2)
            v = torch.cat([past[2 * i + 1], _heads(sa.v_proj(x), sa.num_heads)], dim=2)
            present += [k, v]
            x = layer.self_attn_layer_norm(x + _attend(sa, x, k, v, None))  # the newest token sees every earlier one
            x = layer.encoder_attn_layer_norm(x + _attend(layer.encoder_attn, x, cross[2 * i], cross[2 * i + 1], bias))
            x = layer.final_layer_norm(x + layer.fc2(layer.activation_fn(layer.fc1(x))))
        logits = self.model.lm_head(x[:, -1]) + self.model.final_logits_bias
        return logits, torch.stack(present)


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], names: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]], path: Path, opset: int) -> str:
    """dynamo export (the legacy TorchScript exporter when dynamo fails); returns which one ran."""
    with atomic_path(path, suffix=".onnx") as tmp, torch.no_grad():
        try:
            dims: dict[str, Any] = {}
            shapes = []
            for n in names:
                shapes.append({i: dims.setdefault(d, torch.export.Dim(d, min=1, max=4096)) for i, d in dynamic[n].items()})
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=names,
                                     output_names=outputs, dynamic_shapes=tuple(shapes))
            prog.save(str(tmp), external_data=False)
            return "dynamo"
        except Exception as e:  # noqa: BLE001 - any dynamo failure falls back, and is recorded
            log.warning("dynamo ONNX export of %s failed (%s); using the legacy exporter", path.name, e)
            torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=opset, input_names=names,
                              output_names=outputs, dynamic_axes=dict(dynamic))
            return "legacy"


def _empty_cache(model: Any, batch: int, steps: int) -> torch.Tensor:
    c = model.config
    heads = int(c.decoder_attention_heads)
    return torch.zeros(2 * int(c.decoder_layers), batch, heads, steps, int(c.d_model) // heads)


def export_translation_onnx(model: Any, folder: Path, opset: int = 18) -> dict[str, str]:
    """Write `folder/encoder.onnx` and `folder/decoder.onnx` (fp32); returns {file: exporter used}."""
    model = model.eval().to("cpu")
    vocab = int(model.config.vocab_size)
    ids = torch.randint(3, vocab, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # a padded row: the mask is data, not a constant
    enc = EncoderGraph(model).eval()
    with torch.no_grad():
        _, cross = enc(ids, mask)
    step_ids = torch.full((2, 1), PAD_ID, dtype=torch.long)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        ENCODER_FILE: _export(enc, (ids, mask), ["input_ids", "attention_mask"], ["encoder_hidden_states", "cross_kv"],
                              {"input_ids": {0: "batch", 1: "source"}, "attention_mask": {0: "batch", 1: "source"}},
                              folder / ENCODER_FILE, opset),
        DECODER_FILE: _export(DecoderGraph(model).eval(), (step_ids, mask, cross, _empty_cache(model, 2, 3)),
                              ["decoder_input_ids", "attention_mask", "cross_kv", "past_kv"], ["logits", "present_kv"],
                              {"decoder_input_ids": {0: "batch"}, "attention_mask": {0: "batch", 1: "source"},
                               "cross_kv": {1: "batch", 3: "source"}, "past_kv": {1: "batch", 3: "steps"}},
                              folder / DECODER_FILE, opset),
    }


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
        from tlc_export.export.validate import session

        missing = [f for f in (ENCODER_FILE, DECODER_FILE) if not (folder / f).is_file()]
        if missing:
            raise StageError(f"{folder}: {', '.join(missing)} missing; export the translation model first")
        return cls(session(folder / ENCODER_FILE, threads, exact), session(folder / DECODER_FILE, threads, exact))

    def greedy(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_length: int) -> np.ndarray:
        """Token ids [batch, ≤ max_length], starting with `<pad>` as `generate` returns them."""
        ids, mask = input_ids.astype(np.int64), attention_mask.astype(np.int64)
        _, cross = self.encoder.run(None, {"input_ids": ids, "attention_mask": mask})
        past = self._empty(cross)
        out = np.full((ids.shape[0], 1), PAD_ID, dtype=np.int64)
        done = np.zeros(ids.shape[0], dtype=bool)
        while out.shape[1] < max_length and not done.all():
            logits, past = self.decoder.run(None, {"decoder_input_ids": out[:, -1:], "attention_mask": mask,
                                                   "cross_kv": cross, "past_kv": past})
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
        mask = attention_mask.astype(np.int64)
        _, cross = self.encoder.run(None, {"input_ids": input_ids.astype(np.int64), "attention_mask": mask})
        past = self._empty(cross)
        steps = []
        for t in range(decoder_input_ids.shape[1]):
            logits, past = self.decoder.run(None, {"decoder_input_ids": decoder_input_ids[:, t:t + 1].astype(np.int64),
                                                   "attention_mask": mask, "cross_kv": cross, "past_kv": past})
            steps.append(logits)
        return np.stack(steps, axis=1)

    @staticmethod
    def _empty(cross: np.ndarray) -> np.ndarray:
        """The cache before the first step: no positions yet."""
        shape = list(cross.shape)
        shape[3] = 0
        return np.zeros(shape, dtype=cross.dtype)


def translate_onnx(translator: OrtTranslator, tokenizers: Any, sources: list[str], *, max_source_length: int,
                   max_length: int, batch_size: int = 32) -> list[str]:
    """Greedy translations through the ONNX files (detokenized text, input order), batched by source
    length as `tlc_export.translation.decode.translate` batches `generate`."""
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


def validate_greedy(model: Any, translator: OrtTranslator, tokenizers: Any, sources: list[str], *,
                    max_source_length: int, max_length: int, batch_size: int = 16) -> dict[str, Any]:
    """Greedy token ids from the ONNX files against the PyTorch model's `generate`, sentence by sentence."""
    from tlc_export.config.translation import TranslationDecoding
    from tlc_export.translation.decode import generation_kwargs

    kw = generation_kwargs(TranslationDecoding(strategy="greedy", max_length=max_length))
    model = model.eval().to("cpu")
    mismatched = []
    for start in range(0, len(sources), batch_size):
        chunk = sources[start:start + batch_size]
        enc = tokenizers.source(chunk, truncation=True, max_length=max_source_length, padding=True, return_tensors="np")
        ours = translator.greedy(enc["input_ids"], enc["attention_mask"], max_length)
        with torch.inference_mode():
            ref = model.generate(input_ids=torch.from_numpy(enc["input_ids"]).long(),
                                 attention_mask=torch.from_numpy(enc["attention_mask"]).long(), **kw).numpy()
        for i in range(len(chunk)):
            a, b = _strip(ours[i]), _strip(ref[i])
            if a != b:
                mismatched.append(start + i)
    return {"sentences": len(sources), "mismatched": mismatched, "equal": not mismatched}


def _strip(ids: np.ndarray) -> list[int]:
    """Token ids up to and including the first `</s>` (what follows is padding)."""
    out = []
    for t in ids.tolist():
        out.append(t)
        if t == EOS_ID and len(out) > 1:
            break
    return out
