"""Several GPUs with `torchrun` (DistributedDataParallel); one GPU and the CPU need no launcher."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> Distributed:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and start the process group when world > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return Distributed(device=torch.device(chosen))
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        target, backend = torch.device("cpu"), "gloo"
    torch.distributed.init_process_group(backend=backend)
    return Distributed(rank=int(os.environ["RANK"]), world=world, device=target)


def teardown(dist: Distributed) -> None:
    if dist.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
