"""The resumable training state folder: weights, optimizer, counters, data position, RNG states.

Written as one folder through `atomic_path`, so after a kill -9 the folder is either the previous
complete state or the new complete state, never a mix.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from tlc_export.atomic import atomic_path, recover_folder
from tlc_export.errors import StageError

STATE_FILE = "trainer.json"


@dataclass
class Counters:
    """Everything besides tensors needed to continue exactly where training stopped."""

    step: int = 0
    elapsed_s: float = 0.0  # training seconds only
    tokens: int = 0
    data_position: int = 0  # rows consumed by MLMBatches
    curves_lines: int = 0  # lines of curves.jsonl that belong to this state
    next_eval_s: float = 0.0
    next_checkpoint_s: float = 0.0
    micro_batch_size: int = 0
    last_train_loss: float | None = None
    compile_s: float = 0.0  # compile warm-ups of every attempt so far, outside the training clock
    flops_computed: float = 0.0  # FLOPs our step actually ran (masked-position head, padding rows)


def has_state(target: Path) -> bool:
    """True when a state folder is there to resume, after recovering one that a kill between the two renames
    of its last save left as `.state.old` (the previous complete state: resuming from it redoes some steps,
    where finding nothing would silently restart from step 0)."""
    recover_folder(target)
    return target.exists()


def save_state(target: Path, model: nn.Module, optimizer: torch.optim.Optimizer, counters: Counters) -> None:
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding / decoder weight
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        torch.save(rng, tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps(asdict(counters), indent=2) + "\n")


def load_state(
    source: Path, model: nn.Module, optimizer: torch.optim.Optimizer, restore_rng: bool = True
) -> Counters:
    """Load `source` into `model` and `optimizer` (already built the same way) and return the counters."""
    try:
        counters = Counters(**json.loads((source / STATE_FILE).read_text()))
        missing, unexpected = load_model(model, str(source / "model.safetensors"), strict=False)
        if unexpected or [m for m in missing if not _tied(model, m)]:
            raise ValueError(f"weights do not match the model (missing {missing}, unexpected {unexpected})")
        optimizer.load_state_dict(torch.load(source / "optimizer.pt", map_location="cpu", weights_only=True))
        if restore_rng:
            rng = torch.load(source / "rng.pt", weights_only=True)
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise StageError(
            f"{source}: cannot resume pretraining from this state ({exc}); delete the folder to start the size afresh"
        ) from exc
    return counters


def _tied(model: nn.Module, name: str) -> bool:
    """Whether `name` is a parameter that shares storage with another (saved once under the other name)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    p = params.get(name)
    return p is not None and any(q is p for n, q in params.items() if n != name)
