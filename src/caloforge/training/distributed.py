"""Data-parallel plumbing: device choice, process group set-up under ``torchrun``, collectives.

A process started by ``torchrun --nproc_per_node=K`` sees ``WORLD_SIZE=K``, ``RANK`` and
``LOCAL_RANK`` in its environment; :func:`setup` then joins the process group (NCCL on CUDA,
gloo on CPU) and picks ``cuda:LOCAL_RANK``. Without those variables everything degrades to a
single process and every collective here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from caloforge.errors import InputError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when setup() created the process group (and cleanup ends it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(preference: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    pref = str(preference).lower()
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda requested but no CUDA device is available")
        if pref == "cuda":
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        return torch.device(pref)
    if pref == "cpu":
        return torch.device("cpu")
    if pref == "mps" and torch.backends.mps.is_available():
        return torch.device("mps")
    raise InputError(f"unknown or unavailable device {preference!r} (use auto, cpu or cuda)")


def setup(device: str | torch.device = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; return the rank info and the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank)
    owns = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns), dev


def cleanup(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_flags(info: DistInfo, flags: list[bool], device: torch.device) -> list[bool]:
    """Rank 0's decision (e.g. "checkpoint now", "time is up") on every rank."""
    if not info.enabled:
        return flags
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return [bool(x) for x in t.tolist()]


def all_reduce_sum(info: DistInfo, values: list[float], device: torch.device) -> list[float]:
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather_tensor(info: DistInfo, tensor: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape and dtype on all ranks), on every rank, on the CPU."""
    if not info.enabled:
        return [tensor.cpu()]
    t = tensor.to(device)
    out = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]
