"""Process-group set-up for `torchrun`: DistributedDataParallel over NCCL on GPUs, gloo on CPUs.

    torchrun --standalone --nproc-per-node 2 -m vitkit train ...            # one machine
    torchrun --nnodes 2 --node-rank R --master-addr HOST --master-port 29500 \\
             --nproc-per-node 8 -m vitkit train ...                          # several machines

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them training runs in one process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The device of every command's --device (auto, cpu, cuda, cuda:N, mps): a UsageError for another name or a
    device this machine does not have."""
    from ..options import require_device

    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(require_device(name))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def setup(device_name: str = "auto") -> DistInfo:
    """Join the process group that torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    device = pick_device(device_name, local_rank)
    if world_size > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:  # share the cores among the processes of this machine instead of oversubscribing them
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            torch.set_num_threads(max(1, cpus // max(local_world, 1)))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                    device_id=device if device.type == "cuda" else None)
    return DistInfo(rank, local_rank, world_size, device)


def teardown(info: DistInfo) -> None:
    """Leave the process group together: under gloo, a rank that destroys its group while a peer is still in a
    collective can abort at exit ("terminate called without an active exception", seen in the FSDP checkpoint
    test), so the ranks meet first; a peer that never comes (it failed) is given up after a minute."""
    if info.enabled and dist.is_initialized():
        if dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
            except RuntimeError:  # a rank failed: torchrun ends the others; do not wait longer
                pass
        dist.destroy_process_group()


def broadcast_object(value: Any, info: DistInfo) -> Any:
    """Rank 0's value on every rank."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Sum tensors over ranks, in place (on the process group's device)."""
    if not info.enabled:
        return
    for t in tensors:
        on_device = t.to(info.device)
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        t.copy_(on_device.to(t.device))


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
