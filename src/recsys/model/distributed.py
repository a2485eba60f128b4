"""The process side of training: one process, or DistributedDataParallel when started by torchrun.

Under torchrun every rank reads the same data and draws the same batch order, takes its share of each global
batch, and rank 0 alone validates and writes; the helpers here keep the ranks in step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from recsys.model.config import TrainingDataError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def start_runtime(device: str) -> Runtime:
    """Single process, or DDP when torchrun set WORLD_SIZE (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device not in DEVICES:
        raise TrainingDataError(f"device must be auto, cpu or cuda, got {device!r}")
    if use_cuda and not torch.cuda.is_available():
        raise TrainingDataError("device cuda requested but CUDA is not available")
    chosen = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if world_size > 1:
        if not use_cuda:
            # the ranks share the CPU cores: oversubscribed threads slow everyone down
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size))))
        else:
            torch.cuda.set_device(chosen)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return Runtime(chosen, dist.get_rank(), dist.get_world_size())
    return Runtime(chosen)


@contextmanager
def runtime_for(device: str) -> Iterator[Runtime]:
    """start_runtime, and the process group torn down on the way out (also on errors)."""
    runtime = start_runtime(device)
    try:
        yield runtime
    finally:
        if runtime.is_distributed and dist.is_initialized():
            dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """The module to train: DDP-wrapped (gradients averaged over ranks) when there are several ranks."""
    return DistributedDataParallel(model) if runtime.is_distributed else model


def rank_share(rows: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """This rank's slice of a global batch (every rank holds the same global batch)."""
    return rows[runtime.rank :: runtime.world_size]


def agree_to_stop(stop: bool, runtime: Runtime) -> bool:
    """Rank 0 decides (it alone validates); every rank must leave the loop at the same epoch."""
    if not runtime.is_distributed:
        return stop
    flag = torch.tensor([1.0 if stop else 0.0], device=runtime.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def wait_for_all(runtime: Runtime) -> None:
    """A barrier: e.g. no rank returns before rank 0 has written the model dir."""
    if runtime.is_distributed:
        dist.barrier()
