"""Data-parallel training under ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --nproc_per_node N -m medsci train ...`` starts N processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set; :func:`setup` joins them into one process group (NCCL on GPUs, gloo on CPU) and gives each its
device. Every rank draws the same global batch from the step's seeded generator and trains on its own equal share
of it; DDP averages the gradients, so N processes take the same steps as one process with the whole batch (up
to float summation order). Rank 0 alone writes checkpoints and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from medsci.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def share(self, batch_size: int) -> slice:
        """This rank's items of a global batch of ``batch_size`` (equal shares)."""
        if batch_size % self.world:
            raise ConfigError(f"train.batch_size {batch_size} must be divisible by the number of processes "
                              f"({self.world}) to train data-parallel")
        n = batch_size // self.world
        return slice(self.rank * n, (self.rank + 1) * n)


def ranks_from_env() -> Ranks:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group started by torchrun (if any); returns the ranks and this process's device."""
    ranks = ranks_from_env()
    if not ranks.active:
        return ranks, device
    import torch.distributed as dist

    if device.type == "cuda":
        if torch.cuda.device_count() < ranks.world:
            raise ConfigError(f"{ranks.world} training processes but only {torch.cuda.device_count()} GPU(s) "
                              "on this node")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    if not ranks.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # find_unused_parameters: null tokens and guidance embeddings get no gradient in steps without dropout
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def mean(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The mean of a scalar over all ranks (for logging the global loss)."""
    if not ranks.active:
        return value
    import torch.distributed as dist

    out = value.detach().clone().float()
    dist.all_reduce(out)
    return out / ranks.world


def any_rank(flag: bool, ranks: Ranks, device: torch.device) -> bool:
    """True on every rank when it is True on any (e.g. a time limit reached), so all ranks stop together."""
    if not ranks.active:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(ranks: Ranks) -> None:
    if ranks.active:
        import torch.distributed as dist

        dist.barrier()
