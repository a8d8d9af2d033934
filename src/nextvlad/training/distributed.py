"""One code path for CPU, one GPU and torchrun.

Launch on one machine with N processes (GPUs, or CPU processes with gloo)::

    torchrun --nproc_per_node N -m nextvlad train --preset ... --train-data ... --out RUN

and on several machines (run on each, with its --node_rank)::

    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \
        --nproc_per_node 8 -m nextvlad train ...

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them the run is a single process.
NCCL is used on GPUs, gloo on CPU. Each process reads its own shard of the data and keeps its
own batch-norm statistics (as the paper's two GPU towers did) unless --sync-batchnorm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def setup(device_name: str = "auto") -> Context:
    """Join the process group when launched by torchrun; choose the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(rank, local_rank, world_size, device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_ranks_have(flag: bool, context: Context) -> bool:
    """True when every process has ``flag`` (used to end an epoch together)."""
    if not context.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def sum_over_ranks(values: list[float], context: Context) -> list[float]:
    if not context.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return tensor.tolist()
