"""Data-parallel training under ``torchrun``: one process per GPU (or per CPU slot, with gloo)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def setup(device: torch.device) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment; ``(rank, world size)``.

    Outside ``torchrun`` (no ``WORLD_SIZE``) this does nothing and returns ``(0, 1)``. The backend is NCCL
    for CUDA devices and gloo otherwise. Each process should pass its own device (``cuda:LOCAL_RANK``).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def local_device(device: str) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun, so each process takes its own GPU."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


@torch.no_grad()
def sync_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process, as DDP does each step."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
