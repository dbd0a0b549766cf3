"""Iterative magnitude pruning (paper §4.3): zero the smallest weights, recover by finetuning, repeat.

The ladder goes 0 → step → 2·step … and saves the levels the recipe asks for. Each step ranks the
magnitudes of the weights still alive (globally over every pruned tensor, or within each tensor)
and zeroes exactly as many more as needed to reach the level over the pruned parameter set, so
what was pruned at 30 % is still pruned at 45 %. Recovery finetunes with the masks held fixed
(`tlc_export.finetune.finetune_`), until dev accuracy ≥ `recovery_target` × the unpruned model's,
or one epoch (or `recovery_max_steps`) — whichever comes first; a level already within target
takes zero steps.

The loop itself (`run_ladder`) is task-agnostic: it takes the recovery, the loader of a saved level and
what else to save as callables; `prune_ladder` is classification's, `translation.compress.translation_ladder`
translation's (recovery on BLEU).

Masks are `{parameter name: bool tensor}`, True = kept (see `tlc_export.compress.masks`).
Pruning is stored as plain zeros in the weights (no `weight_orig`/`weight_mask`), plus the masks
in `masks.safetensors` next to each saved level so a resumed ladder continues from the exact set.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from safetensors.torch import load_file, save_file
from torch import nn

from tlc_export import atomic
from tlc_export.compress.masks import apply_masks_, mask_sparsity
from tlc_export.errors import StageError, TlcError

if TYPE_CHECKING:
    from tlc_export.config.compress import PruneConfig
    from tlc_export.config.finetune import FinetuneConfig

Masks = dict[str, torch.Tensor]
MASKS_FILE = "masks.safetensors"
RECORD_FILE = "prune.json"


class PruneError(TlcError, ValueError):
    """Pruning settings select nothing, or masks do not fit the model."""


def level_name(sparsity: float) -> str:
    """Folder / variant tag of a sparsity level: 0.3 → 's30', dense → 's00'."""
    return f"s{round(sparsity * 100):02d}"


def prunable_names(model: nn.Module, cfg: PruneConfig) -> list[str]:
    """Parameters selected by `compress.prune.include` and not by `exclude` (tied aliases once)."""
    names = [
        n for n, p in model.named_parameters()
        if p.dim() >= 2
        and any(fnmatch.fnmatchcase(n, g) for g in cfg.include)
        and not any(fnmatch.fnmatchcase(n, g) for g in cfg.exclude)
    ]
    if not names:
        raise PruneError(
            "compress.prune.include/exclude select no weight matrix of the model; "
            "use globs like '*.weight' (see `tlc recipe-schema`)"
        )
    return names


def _prune_count(scores: torch.Tensor, n_zero: int) -> torch.Tensor:
    """Bool keep-mask zeroing exactly the `n_zero` smallest `scores` (ties broken by position)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_zero <= 0:
        return keep
    if n_zero >= scores.numel():
        return torch.zeros_like(keep)
    # kthvalue + tie handling instead of a full sort/topk: linear memory, fast on huge tensors.
    thr = torch.kthvalue(scores, n_zero).values
    below = scores < thr
    keep &= ~below
    ties = torch.nonzero(scores == thr).flatten()
    keep[ties[: n_zero - int(below.sum())]] = False
    return keep


@torch.no_grad()
def magnitude_masks(
    model: nn.Module, sparsity: float, cfg: PruneConfig, previous: Mapping[str, torch.Tensor] | None = None
) -> Masks:
    """Masks zeroing the smallest-magnitude weights so that `sparsity` of the pruned set is zero.

    `previous` (an earlier level's masks) stays pruned: its zeros count toward the level and only
    weights it kept are ranked. `cfg.scope` = "global" ranks all selected tensors together (the
    paper), "per-layer" gives every tensor the same sparsity.
    """
    if not 0 <= sparsity < 1:
        raise PruneError(f"sparsity {sparsity} must be a fraction in [0, 1)")
    params = dict(model.named_parameters())
    names = prunable_names(model, cfg)
    prev = dict(previous or {})
    extra = sorted(set(prev) - set(names))
    if extra:
        raise PruneError(f"previous masks name parameters outside compress.prune's selection: {extra[:5]}")

    already = sum(int((~m).sum()) for m in prev.values())
    total = sum(params[n].numel() for n in names)
    if already > round(sparsity * total) + (len(names) if cfg.scope == "per-layer" else 0):
        raise PruneError(
            f"previous masks already prune {already / total:.4f} of the selected weights, more than the requested "
            f"{sparsity}; the ladder only goes up (list compress.prune.sparsity in increasing order)"
        )

    def scores(n: str) -> torch.Tensor:
        s = params[n].detach().abs().float().flatten()
        if n in prev:
            # Already pruned: -1 ranks below every live magnitude, so these go first and stay.
            s = s.masked_fill(~prev[n].to(s.device, torch.bool).flatten(), -1.0)
        return s

    if cfg.scope == "per-layer":
        out = {}
        for n in names:
            s = scores(n)
            out[n] = _prune_count(s, round(sparsity * s.numel())).reshape(params[n].shape)
        return out
    flat = torch.cat([scores(n).cpu() for n in names])
    keep = _prune_count(flat, round(sparsity * flat.numel()))
    out, at = {}, 0
    for n in names:
        k = params[n].numel()
        out[n] = keep[at : at + k].reshape(params[n].shape).to(params[n].device)
        at += k
    return out


def make_permanent_(model: nn.Module) -> None:
    """Fold any torch.nn.utils.prune reparametrisation (weight_orig × weight_mask) into plain weights,
    so save_pretrained never writes weight_orig / weight_mask."""
    from torch.nn.utils import prune as tprune

    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(module, hook._tensor_name)


def prune_(model: nn.Module, cfg: PruneConfig | Mapping[str, torch.Tensor], sparsity: float | None = None) -> Masks:
    """Prune `model` in place and return the masks.

    `cfg` is either masks (applied as given) or a PruneConfig plus `sparsity` (one-shot magnitude
    pruning to that level).
    """
    make_permanent_(model)
    if isinstance(cfg, Mapping):
        masks = {n: m.to(torch.bool) for n, m in cfg.items()}
    else:
        if sparsity is None:
            raise PruneError("prune_(model, PruneConfig) needs `sparsity=` (the level to prune to)")
        masks = magnitude_masks(model, sparsity, cfg)
    apply_masks_(model, masks)
    return masks


def save_masks(path: Path, masks: Mapping[str, torch.Tensor]) -> None:
    with atomic.atomic_path(path) as tmp:
        save_file({n: m.to(torch.uint8).contiguous().cpu() for n, m in masks.items()}, str(tmp))


def load_masks(path: Path) -> Masks:
    return {n: t.to(torch.bool) for n, t in load_file(str(path)).items()}


# --- the ladder ------------------------------------------------------------------------------


@dataclass
class LevelRecord:
    """What one saved level reports (also written to `<level>/prune.json`)."""

    level: str
    sparsity: float  # requested
    sparsity_reached: float  # zeros / pruned-set size, measured on the saved weights' masks
    recovery_steps: int
    recovery_seconds: float
    dev_accuracy: float
    dev_accuracy_before_recovery: float
    recovered: bool  # reached recovery_target × base dev accuracy
    model_dir: str  # folder name under the pruned/ directory

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ladder_levels(cfg: PruneConfig) -> list[float]:
    """Every step from `step` up to the highest requested level (requested levels included); none when no
    level is requested (`sparsity: []`: the variants are the dense model's quantizations only)."""
    if not cfg.sparsity:
        return []
    top = max(cfg.sparsity)
    n = math.floor(top / cfg.step + 1e-9)
    steps = {round(cfg.step * (i + 1), 6) for i in range(n)}
    return sorted(steps | {round(s, 6) for s in cfg.sparsity})


def recovery_max_steps(cfg: PruneConfig, num_train: int, batch_size: int) -> int:
    """One recovery budget: `recovery_max_epochs` of the train split, capped by `recovery_max_steps`."""
    steps = math.ceil(cfg.recovery_max_epochs * math.ceil(num_train / batch_size))
    return steps if cfg.recovery_max_steps is None else min(steps, cfg.recovery_max_steps)


def recover_(
    model: nn.Module,
    cfg: PruneConfig,
    *,
    masks: Mapping[str, torch.Tensor],
    tokenizer: Any,
    train: Any,
    dev: Any,
    finetune_cfg: FinetuneConfig,
    base_dev_acc: float,
    console: Console | None = None,
    description: str = "recover",
    finetune_lr: float | None = None,
    seed: int | None = None,
) -> tuple[Any, bool]:
    """Finetune the pruned model with fixed masks until dev ≥ target × base, or the step budget ends.

    `finetune_lr` / `seed`: what the finetune stage chose for this size on dev (default: the first
    of the recipe's lists); recovery runs at `compress.prune.lr`, else half that lr.
    Returns (TrainResult, recovered)."""
    from tlc_export.finetune.train import TrainSettings, finetune_, use_bf16

    target = cfg.recovery_target * base_dev_acc
    ft_lr = finetune_cfg.lr[0] if finetune_lr is None else finetune_lr
    settings = TrainSettings(
        lr=cfg.lr if cfg.lr is not None else ft_lr / 2,
        batch_size=finetune_cfg.batch_size,
        max_steps=recovery_max_steps(cfg, len(train), finetune_cfg.batch_size),
        max_length=finetune_cfg.max_length,
        warmup_ratio=finetune_cfg.warmup_ratio,
        weight_decay=finetune_cfg.weight_decay,
        eval_every_steps=cfg.recovery_eval_every_steps,
        seed=finetune_cfg.seeds[0] if seed is None else seed,
        eval_at_start=True,
        keep_best=True,
        bf16=use_bf16(finetune_cfg.precision),
    )
    result = finetune_(
        model, settings, tokenizer=tokenizer, train=train, dev=dev, masks=masks,
        should_stop=lambda _step, acc: acc >= target, console=console, description=description,
    )
    return result, result.best_dev_accuracy >= target


def load_level_into_(model: nn.Module, level_dir: Path, saved: nn.Module) -> Masks:
    """Copy a saved level's weights (`saved`, loaded from `level_dir`) into `model` (same architecture)
    and return the level's masks."""
    missing = set(model.state_dict()) ^ set(saved.state_dict())
    if missing:
        raise StageError(
            f"{level_dir}: saved level does not match the model (differs in {sorted(missing)[:3]}); "
            "delete the folder to recompute this level"
        )
    model.load_state_dict(saved.state_dict())
    return load_masks(level_dir / MASKS_FILE)


def _level_done(level_dir: Path) -> bool:
    return all((level_dir / f).exists() for f in ("config.json", "model.safetensors", MASKS_FILE, RECORD_FILE))


RecoverFn = Callable[[nn.Module, Masks, str], dict[str, Any]]
"""Recovery of one freshly pruned level: (model, masks, level tag) → the record's recovery fields, which
include `<metric>` (dev after recovery) and `<metric>_before_recovery`."""


def run_ladder(
    model: nn.Module,
    cfg: PruneConfig,
    out_dir: str | Path,
    *,
    recover: RecoverFn,
    load_saved: Callable[[Path], nn.Module],
    save_extra: Callable[[Path], None] | None = None,
    metric: str,
    console: Console | None = None,
    name: str = "",
) -> list[dict[str, Any]]:
    """The iterative ladder, whatever the task: for each step of `ladder_levels(cfg)`, magnitude-prune
    `model` (in place) further from the previous level's masks, `recover` it with the masks held, and
    save the level atomically to `out_dir/sXX/` (`save_pretrained` + `save_extra(folder)` + masks +
    prune.json). A level already saved is loaded (`load_saved(folder)` → a model whose weights are
    copied into `model`) instead of recomputed, so an interrupted ladder resumes at its last finished
    level. Returns the record of every step (`level`, `sparsity`, `sparsity_reached`, the recovery
    fields, `model_dir`)."""
    from tlc_export.finetune.model import atomic_folder, quiet_transformers

    out_dir = Path(out_dir)
    masks: Masks | None = None
    records: list[dict[str, Any]] = []
    for s in ladder_levels(cfg):
        tag = level_name(s)
        level_dir = out_dir / tag
        if _level_done(level_dir):
            masks = load_level_into_(model, level_dir, load_saved(level_dir))
            rec = json.loads((level_dir / RECORD_FILE).read_text())
            records.append(rec)
            if console:
                console.print(f"  {name} {tag}: already saved (dev {rec[metric]:.4g})")
            continue
        masks = magnitude_masks(model, s, cfg, previous=masks)
        prune_(model, masks)
        fields = recover(model, masks, tag)
        apply_masks_(model, masks)
        rec = {"level": tag, "sparsity": s, "sparsity_reached": mask_sparsity(masks), **fields, "model_dir": tag}
        with atomic_folder(level_dir) as tmp, quiet_transformers():
            make_permanent_(model)
            model.save_pretrained(str(tmp))
            if save_extra is not None:
                save_extra(tmp)
            save_masks(tmp / MASKS_FILE, masks)
            atomic.write_json(tmp / RECORD_FILE, rec)
        records.append(rec)
        if console:
            console.print(
                f"  {name} {tag}: sparsity {rec['sparsity_reached']:.4f}, dev {rec[f'{metric}_before_recovery']:.4g} → "
                f"{rec[metric]:.4g} in {rec['recovery_steps']} steps ({rec['recovery_seconds']:.1f} s)"
            )
    return records


def prune_ladder(
    model: nn.Module,
    tokenizer: Any,
    task: Any,
    cfg: PruneConfig,
    finetune_cfg: FinetuneConfig,
    out_dir: str | Path,
    base_dev_acc: float,
    console: Console | None = None,
    name: str = "",
    finetune_lr: float | None = None,
    seed: int | None = None,
) -> list[LevelRecord]:
    """Run the iterative ladder on `model` (the finetuned dense classifier; changed in place) and save
    every level to `out_dir/sXX/` (HF model + tokenizer + masks + prune.json). `task` has `.train`
    and `.dev` lists of examples (dev decides when recovery stops; test is never read here). Levels
    already saved are loaded, not recomputed. `finetune_lr` / `seed`: the size's chosen finetune
    candidate (see `recover_`). Returns the records of every ladder step, requested levels and
    intermediate ones."""
    from tlc_export.finetune.batching import encode_examples
    from tlc_export.finetune.model import load_classifier

    train = encode_examples(tokenizer, task.train, finetune_cfg.max_length)
    dev = encode_examples(tokenizer, task.dev, finetune_cfg.max_length)

    def recover(m: nn.Module, masks: Masks, tag: str) -> dict[str, Any]:
        result, recovered = recover_(
            m, cfg, masks=masks, tokenizer=tokenizer, train=train, dev=dev,
            finetune_cfg=finetune_cfg, base_dev_acc=base_dev_acc, console=console,
            description=f"{name} {tag} recover", finetune_lr=finetune_lr, seed=seed,
        )
        return {
            "recovery_steps": result.steps, "recovery_seconds": round(result.seconds, 3),
            "dev_accuracy": result.best_dev_accuracy,
            # eval_at_start: the first evaluation is the pruned, unrecovered model
            "dev_accuracy_before_recovery": result.history[0]["dev_accuracy"],
            "recovered": recovered,
        }

    records = run_ladder(
        model, cfg, out_dir, recover=recover, load_saved=load_classifier,
        save_extra=lambda folder: tokenizer.save_pretrained(str(folder)),
        metric="dev_accuracy", console=console, name=name,
    )
    return [LevelRecord(**r) for r in records]


def load_level(level_dir: str | Path) -> tuple[nn.Module, Masks]:
    """A saved level as (classifier, masks)."""
    from tlc_export.finetune.model import load_classifier

    level_dir = Path(level_dir)
    model = load_classifier(level_dir)
    return model, load_masks(level_dir / MASKS_FILE)
