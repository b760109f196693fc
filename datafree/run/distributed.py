"""Multi-GPU / multi-node runs through ``torchrun`` and DistributedDataParallel.

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; :func:`init_from_environment` starts the
process group (NCCL on CUDA, gloo on CPU) when WORLD_SIZE > 1, and is a no-op otherwise, so
every code path also runs as a single plain process. No addresses or ports are hard-coded
(§7 item 13): torchrun's rendezvous provides them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class DistributedContext:
    """Rank, world size and device of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def world_size_from_environment() -> int:
    """The number of ranks torchrun started (1 for a plain process)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def init_from_environment(device_name: str | None) -> tuple[DistributedContext, str | None]:
    """Start the process group if launched by torchrun; returns the context and the device name.

    Under torchrun on CUDA each process uses ``cuda:LOCAL_RANK``.
    """
    world_size = world_size_from_environment()
    if world_size <= 1:
        return DistributedContext(), device_name
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in (None, "auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(rank, world_size, local_rank), device_name


def wrap(module: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``module`` when running distributed; the module itself otherwise."""
    if not context.enabled:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def any_rank(flag: bool, context: DistributedContext, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (so all ranks stop together)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
