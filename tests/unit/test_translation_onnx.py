"""ONNX export of a translation model: the ONNX Runtime greedy decode equals the PyTorch greedy decode."""

from __future__ import annotations

import numpy as np
import torch

from tlc_export.recipe import parse_recipe
from tlc_export.translation.data import ParallelPair
from tlc_export.translation.model import build_translation_model
from tlc_export.translation.onnx import OrtTranslator, export_translation_onnx, validate_greedy
from tlc_export.translation.tokenizer import train_tokenizers

RECIPE = """\
translation:
  tokenizer: {vocab_size: 300, min_frequency: 1}
  sizes: [{layers: 2, hidden: 32, decoder_layers: 1, heads: 2, ffn: 64}]
  dropout: 0.0
  train: {time_budget_s: 1}
"""
WORDS = ["cat", "dog", "bird", "man", "woman", "child"]
PAIRS = [ParallelPair(f"the {a} sees the {b}", f"le {a} voit le {b}", f"{a}-{b}") for a in WORDS for b in WORDS]


def test_onnx_greedy_equals_torch_greedy(tmp_path, one_thread):
    cfg = parse_recipe(RECIPE).translation
    tok = train_tokenizers(PAIRS, cfg.tokenizer)
    model = build_translation_model(cfg.grid()[0], cfg, len(tok.source), seed=4).eval()
    used = export_translation_onnx(model, tmp_path / "onnx")
    assert set(used) == {"encoder.onnx", "decoder.onnx"}
    ort = OrtTranslator.open(tmp_path / "onnx", threads=1)
    # the cached decoder's logits at every prefix position against the model's on a padded batch
    enc = tok.source([PAIRS[0].source, "the cat"], padding=True, return_tensors="np")
    prefix = np.array([[0, 5, 9], [0, 7, 7]], dtype=np.int64)
    logits = ort.teacher_forced_logits(enc["input_ids"], enc["attention_mask"], prefix)  # step by step, through the cache
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(enc["input_ids"]), attention_mask=torch.from_numpy(enc["attention_mask"]),
                    decoder_input_ids=torch.from_numpy(prefix)).logits.numpy()
    assert np.abs(logits - ref).max() < 1e-4
    sources = [p.source for p in PAIRS[::3]] + ["the child", "a sentence never seen before, with words"]
    report = validate_greedy(model, ort, tok, sources, max_source_length=32, max_length=12, batch_size=5)
    assert report == {"sentences": len(sources), "mismatched": [], "equal": True}
