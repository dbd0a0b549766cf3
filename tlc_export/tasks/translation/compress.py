"""The project's compression (`tlc_export.compress`) on encoder-decoder weights: quantizer, pruning ladder
with recovery on translation pairs, and packed artifacts without the fixed position tables.

`quantize_` already quantizes a tied parameter once under its first name: with a shared vocabulary
the encoder, decoder and output embeddings are one table (`model.shared.weight`), quantized once,
and stay tied; `magnitude_masks` likewise ranks and prunes it once. What is particular to translation
models is what must *not* be compressed or stored: Marian's sinusoidal position tables are parameters
only by implementation (fixed, requires_grad False, recomputed from the formula when a model is built),
not learned weights; quantizing or pruning them would change the model without saving anything a
deployment stores, and storing them would charge the artifact for a formula. Layer norms (scales, not
connections) are never pruned either.

Recovery after each pruning step is the translation trainer's own step (`train.train_step`: token batches
from `batching`, label-smoothed loss per target token, grad clipping, bf16 autocast on CUDA) with the
masks held by gradient hooks and re-applied after every update; dev BLEU (greedy, the fixed dev sample
of `translation.train.eval_sentences`) is checked before the first step and every
`compress.prune.recovery_eval_every_steps`, and recovery stops once it is ≥ `recovery_target` × the
unpruned model's, or after `recovery_max_epochs` epochs / `recovery_max_steps` steps. The best-dev
weights are kept (dev selects; the first check counts, so a level already within target takes zero steps).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from tlc_export.compress.artifact import ArtifactError, StorageReport, load_model, save_artifact
from tlc_export.compress.masks import apply_masks_, bind_masks
from tlc_export.compress.quantize import QuantConfig, QuantizedTensor, quantize_

if TYPE_CHECKING:
    from tlc_export.config.compress import PruneConfig
    from tlc_export.config.translation import TranslationConfig
    from tlc_export.tasks.translation.batching import EncodedPairs
    from tlc_export.tasks.translation.train import DevSample

FIXED_PARAMETERS = ("*embed_positions*",)
NEVER_PRUNED = (*FIXED_PARAMETERS, "*layer_norm*", "*layernorm*", "*LayerNorm*")
POSITION_RULE = "marian-sinusoidal: MarianSinusoidalPositionalEmbedding.create_weight(), rebuilt from the config"


# --- quantization and storage ------------------------------------------------------------------


def translation_quant_config(cfg: QuantConfig) -> QuantConfig:
    """`cfg` with the fixed position tables excluded."""
    return dataclasses.replace(cfg, exclude=tuple(cfg.exclude) + tuple(p for p in FIXED_PARAMETERS if p not in cfg.exclude))


def quantize_translation_(model: Any, cfg: QuantConfig, masks: Any = None) -> dict[str, QuantizedTensor]:
    """Fake-quantize a translation model in place (learned weights only; tied tables once)."""
    return quantize_(model, translation_quant_config(cfg), masks=masks)


def fixed_parameter_names(model: nn.Module) -> list[str]:
    """The parameters that are fixed functions of the config (the position tables), tied aliases once."""
    return [n for n, _ in model.named_parameters() if any(fnmatch.fnmatchcase(n, g) for g in FIXED_PARAMETERS)]


def learned_parameters(model: nn.Module) -> int:
    """Learned parameters: tied tables once, the fixed position tables not counted."""
    fixed = set(fixed_parameter_names(model))
    return sum(p.numel() for n, p in model.named_parameters() if n not in fixed)


def save_translation_artifact(path: str | Path, model: nn.Module, quantized: dict[str, QuantizedTensor] | None,
                              masks: dict[str, torch.Tensor] | None, meta: dict[str, Any]) -> StorageReport:
    """`save_artifact` without the position tables: they are recorded as recomputed (with a fingerprint
    of the scored model's tables, checked when the artifact is loaded) and neither stored nor counted."""
    fixed = fixed_parameter_names(model)
    return save_artifact(
        path, model, quantized, masks,
        meta={**meta, "position_tables": "not stored: sinusoidal, recomputed at load from the config"},
        recomputed={n: POSITION_RULE for n in fixed},
    )


def load_translation_variant(path: str | Path) -> Any:
    """The variant's MarianMTModel in eval mode: the fake-quant weights exactly as scored (pruned positions
    zero), the tied table shared again, and the fixed position tables rebuilt (and checked)."""
    from transformers import MarianMTModel

    from tlc_export.finetune.model import quiet_transformers

    with quiet_transformers():
        model = load_model(path)
    if not isinstance(model, MarianMTModel):
        raise ArtifactError(f"{path}: holds a {type(model).__name__}, not a translation model (MarianMTModel); "
                            "read it with tlc_export.compress.artifact.load_model")
    return model.eval()


# --- pruning -----------------------------------------------------------------------------------


def translation_prune_config(cfg: PruneConfig) -> PruneConfig:
    """`cfg` with the position tables and layer norms excluded, whatever the recipe's globs say."""
    extra = [p for p in NEVER_PRUNED if p not in cfg.exclude]
    return cfg.model_copy(update={"exclude": [*cfg.exclude, *extra]})


def recovery_step_cap(cfg: PruneConfig, train: EncodedPairs, batch_tokens: int) -> int:
    """Steps in `recovery_max_epochs` epochs of the training pairs (a step is ~`batch_tokens` source + target
    tokens), capped by `recovery_max_steps`."""
    total = sum(train.tokens(i) for i in range(len(train)))
    steps = math.ceil(cfg.recovery_max_epochs * math.ceil(total / batch_tokens))
    return steps if cfg.recovery_max_steps is None else min(steps, cfg.recovery_max_steps)


def dev_sample_bleu(model: nn.Module, tokenizers: Any, dev: DevSample, cfg: TranslationConfig) -> float:
    """Greedy BLEU on the fixed dev sample (the curves' measure; no interval: it only decides when to stop)."""
    from tlc_export.tasks.translation.decode import translate
    from tlc_export.tasks.translation.metrics import score_translations

    hyps = translate(model, tokenizers, dev.sources, cfg.decoding, max_source_length=cfg.max_source_length,
                     strategy="greedy")
    return score_translations(hyps, dev.references, bootstrap=1).bleu


@dataclass
class Recovery:
    """One level's recovery: what it took and what dev said (the level record's fields)."""

    recovery_steps: int
    recovery_seconds: float
    dev_bleu: float  # best dev-sample BLEU (the weights kept)
    dev_bleu_before_recovery: float
    base_dev_bleu: float
    target_dev_bleu: float
    recovered: bool
    lr: float
    step_cap: int | None  # None: within target at the first check, the cap was not needed
    dev_sentences: int
    decoding: str = "greedy"
    history: list[dict[str, Any]] = field(default_factory=list)  # {step, dev_bleu, train_loss (None at 0), elapsed_s}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recover_translation_(
    model: nn.Module,
    cfg: PruneConfig,
    *,
    masks: dict[str, torch.Tensor],
    tokenizers: Any,
    train: EncodedPairs | Callable[[], EncodedPairs],
    dev: DevSample,
    translation: TranslationConfig,
    base_dev_bleu: float,
    console: Console | None = None,
    description: str = "recover",
) -> Recovery:
    """Finetune a pruned translation model in place, masks held, until dev BLEU ≥ target × base or the
    step cap (see the module docstring). lr: `compress.prune.lr`, else half `translation.train.lr`,
    warmed up and decayed linearly over the cap (`pretrain.schedule.lr_at` on steps). `train`: the encoded
    training pairs, or a callable giving them, called only when a step is needed (`step_cap` is None in
    the result when none was)."""
    from tlc_export.pretrain.schedule import lr_at
    from tlc_export.pretrain.step import autocast_dtype, make_optimizer
    from tlc_export.tasks.translation.train import CPU_MICRO_TOKENS, StepPlan, train_step

    t = translation.train
    device = next(model.parameters()).device
    dtype = autocast_dtype(t, device)  # type: ignore[arg-type]  # reads .precision, which the section shares
    lr = cfg.lr if cfg.lr is not None else t.lr / 2
    target = cfg.recovery_target * base_dev_bleu
    micro_tokens = t.max_tokens_per_micro_batch or (t.batch_tokens if device.type == "cuda" else min(CPU_MICRO_TOKENS, t.batch_tokens))
    start = time.perf_counter()
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"bleu": -1.0, "step": 0, "state": None}

    def evaluate(step: int, loss: float | None) -> float:
        bleu = dev_sample_bleu(model, tokenizers, dev, translation)
        history.append({"step": step, "dev_bleu": bleu, "train_loss": loss, "elapsed_s": round(time.perf_counter() - start, 3)})
        if bleu > best["bleu"]:
            best.update(bleu=bleu, step=step, state={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        return bleu

    apply_masks_(model, masks)
    before = evaluate(0, None)  # no training loss yet (None, not NaN: the record is strict JSON)
    step, done, cap = 0, before >= target, None
    if not done and cfg.recovery_max_steps != 0:
        train = train() if callable(train) else train
        cap = recovery_step_cap(cfg, train, t.batch_tokens)
        torch.manual_seed(t.seed)  # dropout
        plan = StepPlan(train, micro_tokens, t.batch_tokens, t.seed + 1)
        optimizer = make_optimizer(model, t, device)  # type: ignore[arg-type]  # reads lr/betas/eps/weight_decay
        bound = bind_masks(model, masks)
        # Gradients of pruned weights are zeroed as they are computed (before clipping and the update),
        # and the masks are re-applied after each update, so pruned weights stay exactly 0.
        hooks = [p.register_hook(_times(m.to(p.dtype))) for p, m in bound]
        position, losses = 0, []
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[info]}"), console=console, transient=True)
        model.train()
        try:
            with progress:
                task = progress.add_task(description, total=cap, info="")
                while step < cap and not done:
                    micro, position = plan.next_step(position)
                    # lr at the middle of the step: a short cap's first step is not spent in warm-up
                    loss, _ = train_step(model, optimizer, train, micro, lr_at(step + 0.5, cap, lr, t.warmup_fraction),
                                    translation, device, dtype)
                    apply_masks_(model, masks)
                    step += 1
                    losses.append(loss)
                    if step % cfg.recovery_eval_every_steps == 0 or step == cap:
                        done = evaluate(step, sum(losses) / len(losses)) >= target
                        losses = []
                    progress.update(task, advance=1, info=f"loss {loss:.3f} dev BLEU {best['bleu']:.2f}")
        finally:
            for h in hooks:
                h.remove()
    if best["step"] != step and best["state"] is not None:
        model.load_state_dict(best["state"])
        apply_masks_(model, masks)
    model.eval()
    return Recovery(
        recovery_steps=step, recovery_seconds=round(time.perf_counter() - start, 3), dev_bleu=float(best["bleu"]),
        dev_bleu_before_recovery=before, base_dev_bleu=base_dev_bleu, target_dev_bleu=target,
        recovered=float(best["bleu"]) >= target, lr=lr, step_cap=cap, dev_sentences=len(dev.sources), history=history,
    )


def _times(mask: torch.Tensor) -> Any:
    """A gradient hook multiplying by `mask` (0 at pruned positions)."""
    return lambda grad: grad * mask


def load_translation_level_model(folder: Path) -> Any:
    """A saved MarianMTModel folder (a ladder level or the translation checkpoint), eval mode."""
    from transformers import MarianMTModel

    from tlc_export.finetune.model import quiet_transformers

    with quiet_transformers():
        return MarianMTModel.from_pretrained(str(folder)).eval()


def translation_ladder(
    model: nn.Module,
    cfg: PruneConfig,
    *,
    tokenizers: Any,
    train: EncodedPairs | Callable[[], EncodedPairs],
    dev: DevSample,
    translation: TranslationConfig,
    out_dir: str | Path,
    base_dev_bleu: float,
    console: Console | None = None,
    name: str = "",
) -> list[dict[str, Any]]:
    """The iterative ladder (`compress.prune.run_ladder`) on a translation model (changed in place): levels
    saved to `out_dir/sXX/` (MarianMTModel + masks.safetensors + prune.json), resumed level by level.
    `train`: the encoded training pairs, or a callable returning them (called only when a level needs
    recovery steps; it may cache). Returns every step's record."""
    from tlc_export.compress.prune import run_ladder

    def recover(m: nn.Module, masks: dict[str, torch.Tensor], tag: str) -> dict[str, Any]:
        r = recover_translation_(m, translation_prune_config(cfg), masks=masks, tokenizers=tokenizers, train=train,
                                 dev=dev, translation=translation, base_dev_bleu=base_dev_bleu, console=console,
                                 description=f"{name} {tag} recover")
        return r.to_dict()

    return run_ladder(model, translation_prune_config(cfg), out_dir, recover=recover,
                      load_saved=load_translation_level_model, metric="dev_bleu", console=console, name=name)
