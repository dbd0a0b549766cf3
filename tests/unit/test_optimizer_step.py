"""One pretraining step and one translation step against a hand-written AdamW with gradient clipping and
weight-decay groups.

The gradients of the reference come from plain `transformers` (the model's own `labels=` loss); the update
is written out from the AdamW paper (decoupled decay, bias-corrected moments) and the clipping from its
definition (one global L2 norm). The decay groups are written as the rule says, by name: biases and norm
weights are not decayed, every matrix and embedding table is. Settings are chosen so each part moves the
weights by far more than the tolerance (large ε makes Adam's first step depend on the clipped scale), and
the test checks that: a reference without clipping, or with the groups swapped, is far from the step.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tlc_export.config.models import ModelSize
from tlc_export.config.pretrain import PretrainConfig
from tlc_export.models import build_mlm
from tlc_export.pretrain.loss import MLMLoss
from tlc_export.pretrain.step import MaskSpec, TrainStep, make_optimizer

VOCAB, SEQ = 300, 32
SPECIAL = (0, 1, 2, 3, 4)
LR, WD, EPS, CLIP, BETAS = 1e-2, 0.3, 1e-3, 0.05, (0.9, 0.98)
ATOL = 1e-6


def decays(name: str) -> bool:
    """The rule, by name: no weight decay on biases and on LayerNorm weights."""
    last = name.rsplit(".", 2)
    return not (name.endswith("bias") or any("norm" in part.lower() for part in last[:-1]))


def adamw_step(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], *, clip: float | None,
               decay_names: set[str]) -> dict[str, torch.Tensor]:
    """One AdamW step from zero moments (float64): clip the global gradient norm, then
    p ← p·(1 − lr·λ) − lr · m̂ / (√v̂ + ε) with m̂ = g, v̂ = g² after bias correction of the first step."""
    g = {n: grads[n].double() for n in params}
    if clip is not None:
        norm = math.sqrt(sum(float((x * x).sum()) for x in g.values()))
        coef = min(1.0, clip / (norm + 1e-6))
        g = {n: x * coef for n, x in g.items()}
    b1, b2 = BETAS
    out = {}
    for n, p in params.items():
        m, v = (1 - b1) * g[n], (1 - b2) * g[n] * g[n]
        m_hat, v_hat = m / (1 - b1), v / (1 - b2)
        lam = WD if n in decay_names else 0.0
        out[n] = p.double() * (1 - LR * lam) - LR * m_hat / (v_hat.sqrt() + EPS)
    return out


def _check(after: dict[str, torch.Tensor], before: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
    names = set(before)
    decay_names = {n for n in names if decays(n)}
    assert decay_names and names - decay_names  # both groups are populated
    ref = adamw_step(before, grads, clip=CLIP, decay_names=decay_names)
    worst = max(float((after[n].double() - ref[n]).abs().max()) for n in names)
    assert worst < ATOL, worst
    # The reference is sensitive to every part it checks: each alternative misses by far more than ATOL.
    for alt in (adamw_step(before, grads, clip=None, decay_names=decay_names),
                adamw_step(before, grads, clip=CLIP, decay_names=names - decay_names),
                adamw_step(before, grads, clip=CLIP, decay_names=set())):
        assert max(float((after[n].double() - alt[n]).abs().max()) for n in names) > 100 * ATOL


def test_pretraining_step_is_adamw_with_clipping_and_decay_groups(one_thread: None) -> None:
    torch.manual_seed(0)
    model = build_mlm(ModelSize(layers=2, hidden=32, heads=2), VOCAB, SEQ, dropout=0.0)
    reference = copy.deepcopy(model)
    cfg = PretrainConfig(time_budget_s=1, lr=LR, weight_decay=WD, eps=EPS, betas=BETAS, grad_clip=CLIP)
    spec = MaskSpec(mask_token_id=4, vocab_size=VOCAB, special_ids=SPECIAL)
    rows = torch.randint(5, VOCAB, (6, SEQ), generator=torch.Generator().manual_seed(1))
    step = TrainStep(MLMLoss(model, masked_only=True), make_optimizer(model, cfg, torch.device("cpu")),
                     micro_batch_size=6, device=torch.device("cpu"), dtype=None, grad_clip=cfg.grad_clip, mask=spec)
    inputs, labels = step.masker(rows, 5, global_rows=len(rows), rank=0, world_size=1)  # the masks the step draws
    step(rows, lr=LR, mask_seed=5)

    reference.train()
    reference(input_ids=inputs, labels=labels).loss.backward()  # plain transformers: mean CE over masked tokens
    named = {n: p for n, p in reference.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in named.items()}
    grads = {n: p.grad.detach().clone() for n, p in named.items()}
    after = dict(model.named_parameters())
    _check({n: after[n].detach() for n in named}, before, grads)


def test_translation_step_is_adamw_with_clipping_and_decay_groups(one_thread: None) -> None:
    from test_translation_model import PAIRS

    from tlc_export.recipe import parse_recipe
    from tlc_export.tasks.translation import train as T
    from tlc_export.tasks.translation.batching import collate, encode_pairs
    from tlc_export.tasks.translation.model import build_translation_model
    from tlc_export.tasks.translation.tokenizer import train_tokenizers

    recipe = f"""\
translation:
  data: {{kind: tsv, path: unused.tsv}}
  tokenizer: {{vocab_size: 300, min_frequency: 1, shared: true}}
  sizes: [{{layers: 2, hidden: 32, decoder_layers: 1, heads: 2, ffn: 64}}]
  max_source_length: 16
  max_target_length: 16
  dropout: 0.0
  train: {{time_budget_s: 1, lr: {LR}, weight_decay: {WD}, eps: {EPS}, betas: [{BETAS[0]}, {BETAS[1]}],
          grad_clip: {CLIP}, label_smoothing: 0.0}}
"""
    cfg = parse_recipe(recipe).translation
    tok = train_tokenizers(PAIRS, cfg.tokenizer)
    enc = encode_pairs(tok, PAIRS, cfg.max_source_length, cfg.max_target_length)
    model = build_translation_model(cfg.grid()[0], cfg, source_vocab=len(tok.source), seed=1)
    reference = copy.deepcopy(model)
    batch = list(range(8))
    opt = T.make_optimizer(model, cfg.train, torch.device("cpu"))
    T.train_step(model, opt, enc, [batch], LR, cfg, torch.device("cpu"), None)

    reference.train()
    b = collate(enc, batch)
    # Plain transformers: the model shifts the labels itself; mean CE over the target tokens.
    reference(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss.backward()
    named = {n: p for n, p in reference.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in named.items()}
    grads = {n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for n, p in named.items()}
    after = dict(model.named_parameters())
    _check({n: after[n].detach() for n in named}, before, grads)


@pytest.mark.parametrize("name,expected", [
    ("roberta.encoder.layer.0.attention.self.query.weight", True), ("roberta.embeddings.word_embeddings.weight", True),
    ("roberta.encoder.layer.0.attention.self.query.bias", False), ("roberta.encoder.LayerNorm.weight", False),
    ("model.encoder.layers.0.self_attn_layer_norm.weight", False), ("lm_head.layer_norm.weight", False),
])
def test_the_reference_rule(name: str, expected: bool) -> None:
    assert decays(name) is expected
