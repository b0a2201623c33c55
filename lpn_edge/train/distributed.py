"""Several GPUs with `torchrun` (DistributedDataParallel); one GPU and the CPU need no launcher."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lpn_edge.errors import LpnEdgeError


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


# Collectives: in one process each is the identity; with several, every rank must call it at the same point.

def max_over_ranks(dist: Distributed, value: int) -> int:
    """The largest of the ranks' integers."""
    if dist.world == 1:
        return int(value)
    tensor = torch.tensor([int(value)], dtype=torch.int64, device=dist.device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return int(tensor.item())


def sum_over_ranks(dist: Distributed, values: list[float]) -> list[float]:
    """The element-wise sum of the ranks' lists of numbers (float64)."""
    if dist.world == 1:
        return [float(v) for v in values]
    tensor = torch.tensor(values, dtype=torch.float64, device=dist.device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor.tolist()


def gather_to_main(dist: Distributed, obj: Any) -> list[Any] | None:
    """[obj of rank 0, obj of rank 1, ...] on rank 0, None on the others (objects are pickled in transit)."""
    if dist.world == 1:
        return [obj]
    gathered = [None] * dist.world if dist.is_main else None
    torch.distributed.gather_object(obj, gathered, dst=0)
    return gathered


def barrier(dist: Distributed) -> None:
    if dist.world > 1:
        torch.distributed.barrier()


def on_main(dist: Distributed, action: Callable[[], Any]) -> Any:
    """Run `action` on rank 0 only while the others wait for its outcome; an error there is raised on every rank.

    For what must happen once (checking and creating the run directory): two ranks doing it race each other.
    Returns the action's result on rank 0, None elsewhere.
    """
    if dist.world == 1:
        return action()
    result, error = None, None
    if dist.is_main:
        try:
            result = action()
        except Exception as exc:  # noqa: BLE001 - handed to every rank, then raised again here
            error = exc
    verdict = [None if error is None else (isinstance(error, LpnEdgeError), str(error) or type(error).__name__)]
    torch.distributed.broadcast_object_list(verdict, src=0)
    if error is not None:
        raise error
    if verdict[0] is not None:
        friendly, message = verdict[0]
        raise LpnEdgeError(message if friendly else f"rank 0 failed: {message}")
    return result
