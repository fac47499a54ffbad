"""torchrun / DDP helpers: one process per GPU, rank 0 writes every file.

``torchrun --nproc_per_node=4 -m classranker_plugin.cli.main train ...`` sets WORLD_SIZE, RANK and
LOCAL_RANK; :func:`setup` then joins the process group (NCCL on GPUs, Gloo on CPUs), picks the GPU of
the local rank and :func:`wrap` puts the network in ``DistributedDataParallel``. Without those
variables (or with WORLD_SIZE=1) everything is a plain single-process run.

Sharding (:func:`shard`) follows ``DistributedSampler``: the epoch's index list, identical on every
rank because it comes from the same seeded generator, is padded to a multiple of the world size and
rank r takes every world-th index starting at r.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..checkpoint import resolve_device


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Context:
    """Join the torchrun process group when WORLD_SIZE > 1; otherwise resolve ``device`` only."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(device=resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return Context(rank=rank, world_size=world, local_rank=local_rank, device=resolved)


def wrap(network: torch.nn.Module, context: Context) -> torch.nn.Module:
    """The network in DDP when distributed (gradients averaged over ranks), else as it is."""
    if not context.distributed:
        return network
    from torch.nn.parallel import DistributedDataParallel
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=device_ids)


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    return getattr(network, "module", network)


def shard(indices: torch.Tensor, context: Context) -> torch.Tensor:
    """This rank's share of the epoch's indices (padded by repetition to equal shares)."""
    if not context.distributed:
        return indices
    per_rank = -(-len(indices) // context.world_size)
    total = per_rank * context.world_size
    if total > len(indices):
        indices = torch.cat([indices, indices[: total - len(indices)]])
    return indices[context.rank:total:context.world_size]


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()


def broadcast_flag(flag: bool, context: Context) -> bool:
    """Rank 0's decision, on every rank (e.g. early stopping)."""
    if not context.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0],
                         device=context.device if context.device.type == "cuda" else "cpu")
    dist.broadcast(value, src=0)
    return bool(value.item() > 0.5)


def teardown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()
