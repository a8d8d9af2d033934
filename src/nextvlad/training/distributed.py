"""One code path for CPU, one GPU and torchrun.

Launch on one machine with N processes (GPUs, or CPU processes with gloo)::

    torchrun --nproc_per_node N -m nextvlad train --preset ... --train-data ... --out RUN

and on several machines (run on each, with its --node_rank)::

    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \
        --nproc_per_node 8 -m nextvlad train ...

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them the run is a single process.
NCCL is used on GPUs, gloo on CPU. Each process reads its own shard of the data and keeps its
own batch-norm statistics (as the paper's two GPU towers did) unless --sync-batchnorm; before
each evaluation and checkpoint the processes average their moving statistics, so that what is
evaluated is what is saved, whichever process evaluates.

What the processes must agree on every step (has every process a batch? how many examples
and skipped records? did a signal come?) is known on each host, so it is summed over a gloo
group of CPU tensors (:class:`HostAgreement`): no device waits for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    host_group: Any = None  # gloo group for host values (None: the default group, or alone)

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
    host_group = None
    if world_size > 1:
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if dist.get_backend() != "gloo":  # host values go over gloo, device ones over NCCL
            host_group = dist.new_group(backend="gloo")
    return Context(rank, local_rank, world_size, device, host_group)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sum_over_ranks(values: list[float], context: Context) -> list[float]:
    """Host values summed over the processes (over gloo, on the CPU: no device waits)."""
    if not context.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, group=context.host_group)
    return tensor.tolist()


def all_ranks_have(flag: bool, context: Context) -> bool:
    """True when every process has ``flag`` (to end an epoch or give up together)."""
    return sum_over_ranks([1.0 if flag else 0.0], context)[0] == context.world_size


@torch.no_grad()
def average_batch_norm_statistics(model: nn.Module, context: Context) -> None:
    """Give every process the mean of the processes' batch-norm moving statistics (before an
    evaluation or a checkpoint, so that the statistics evaluated are those saved)."""
    if not context.distributed:
        return
    buffers = [
        b
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b in (m.running_mean, m.running_var)
        if b is not None
    ]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    dist.all_reduce(flat)
    flat /= context.world_size
    for b, value in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
        b.copy_(value.reshape(b.shape))


def gather_rng(context: Context) -> dict[str, torch.Tensor] | None:
    """Under DDP, every process's RNG states (for rank 0 to save); None otherwise."""
    if not context.distributed:
        return None
    own = [torch.get_rng_state()]
    if context.device.type == "cuda":
        own.append(torch.cuda.get_rng_state(context.device))
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, own, group=context.host_group)
    states: dict[str, torch.Tensor] = {}
    for rank, found in enumerate(gathered):
        states[f"rng.torch.rank{rank}"] = found[0]
        if len(found) > 1:
            states[f"rng.cuda.rank{rank}"] = found[1]
    return states
