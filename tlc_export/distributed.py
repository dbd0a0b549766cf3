"""torch.distributed set-up from torchrun's environment (nccl on CUDA, gloo on CPU)."""

from __future__ import annotations

import datetime
import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Initialise the default process group once, if launched by torchrun with more than one process."""
    if not is_distributed():
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    # Long timeout: rank 0 may spend minutes fetching data while the others wait at a barrier.
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60))


def barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
