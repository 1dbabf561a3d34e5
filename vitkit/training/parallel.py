"""Data parallelism for training: DDP (a full copy of the model per rank) or FSDP2 (`fully_shard`: parameters,
gradients and optimizer state sharded over the ranks, each block gathered only while it computes).

    train_model = wrap_model(model, ParallelConfig("fsdp", param_dtype="bf16"), info)
    write_sharded_checkpoint(run_dir, step, model, optimizer, state, info)     # torch.distributed.checkpoint
    load_sharded_checkpoint(folder, model, optimizer)                          # on any number of ranks
    full = full_state_dict(model, info)                                        # rank 0: the whole model

With FSDP a checkpoint is written by every rank at once with `torch.distributed.checkpoint` (each rank its own
shard file), into a hidden temporary folder that rank 0 renames to step_NNNNNNNN once all ranks are done: a crash
leaves no checkpoint for that step, or a whole one. Such a checkpoint holds the model and optimizer by their
parameter names, not by rank, so a run saved on 2 ranks continues on 1 or on 4. The run's final weights are
gathered to rank 0 and saved as vitkit's usual .safetensors.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..files import replace_folder
from . import distributed
from .checkpoint import (MANIFEST, STATE, STATE_FORMAT, STATE_VERSION, checkpoints_dir, prune, step_dir_name,
                         write_manifest)

MODES = ("ddp", "fsdp")
PARAM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DCP_METADATA = ".metadata"  # torch.distributed.checkpoint's index of the shard files


@dataclass
class ParallelConfig:
    """How the model is spread over the ranks of a torchrun launch."""

    mode: str = "ddp"  # ddp (a copy per rank) or fsdp (fully_shard per block and at the top)
    param_dtype: str = "fp32"  # fsdp: the dtype the gathered parameters compute in (bf16: mixed precision; the
    # sharded master weights, the gradient reduction and the optimizer stay fp32)
    checkpoint_blocks: bool = False  # activation checkpointing: keep only each block's input, recompute the rest

    def validate(self) -> "ParallelConfig":
        if self.mode not in MODES:
            raise UsageError(f"--parallel {self.mode}: expected one of {', '.join(MODES)}")
        if self.param_dtype not in PARAM_DTYPES:
            raise UsageError(f"--fsdp-param-dtype {self.param_dtype}: expected one of {', '.join(PARAM_DTYPES)}")
        if self.param_dtype != "fp32" and self.mode != "fsdp":
            raise UsageError(f"--fsdp-param-dtype {self.param_dtype} needs --parallel fsdp (with DDP use "
                             "--precision bf16)")
        return self


def _checkpointed_forward(self, *args, **kwargs):
    """A block's forward that keeps only its input for the backward pass (bound to each block, so a deep copy of
    the model, such as the EMA's, is bound to its own blocks)."""
    from torch.utils.checkpoint import checkpoint

    forward = functools.partial(type(self).forward, self)
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def checkpoint_blocks(model: nn.Module) -> None:
    """Activation checkpointing per encoder block: each block keeps its input and recomputes its activations in
    the backward pass (its random state replayed, so dropout draws the same masks). State-dict names unchanged."""
    import types

    for block in model.blocks:
        block.forward = types.MethodType(_checkpointed_forward, block)


def wrap_model(model: nn.Module, config: ParallelConfig, info: distributed.DistInfo) -> nn.Module:
    """The module that trains: `model` itself (one process), a DistributedDataParallel around it, or `model`
    sharded in place by `fully_shard` (each block, then the whole). Call before building the optimizer."""
    config.validate()
    if config.checkpoint_blocks:
        checkpoint_blocks(model)
    if not info.enabled:
        if config.param_dtype != "fp32":
            raise UsageError(f"--fsdp-param-dtype {config.param_dtype} needs several processes (torchrun); in "
                             "one process use --precision bf16")
        return model
    device = info.device
    if config.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (info.world_size,))
    policy = MixedPrecisionPolicy(param_dtype=PARAM_DTYPES[config.param_dtype], reduce_dtype=torch.float32)
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


@contextlib.contextmanager
def gradient_sync(train_model: nn.Module, sync: bool):
    """Gradient accumulation: with `sync` False the backward passes inside keep their gradients local (DDP's
    no_sync, FSDP's set_requires_gradient_sync), with True they are reduced over the ranks as usual."""
    if sync:
        yield
        return
    if hasattr(train_model, "no_sync"):
        with train_model.no_sync():
            yield
    elif hasattr(train_model, "set_requires_gradient_sync"):
        train_model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            train_model.set_requires_gradient_sync(True)
    else:
        yield


def local_tensor(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor from what clip_grad_norm_ returns over sharded parameters (a replicated DTensor)."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_state_dict(model: nn.Module, info: distributed.DistInfo) -> dict[str, torch.Tensor]:
    """The whole model's state dict on the CPU, on rank 0 (empty on the others); every rank must call it."""
    if not is_sharded(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def unsharded_copy(model: nn.Module, info: distributed.DistInfo):
    """On rank 0, a plain VisionTransformer with the trained weights (for saving, evaluating); None elsewhere.
    A model that is not sharded is returned as it is."""
    if not is_sharded(model):
        return model
    from ..models import create_model

    state = full_state_dict(model, info)
    if not info.is_main:
        return None
    copy = create_model(model.config)
    copy.load_state_dict(state)
    copy.preprocessing = model.preprocessing
    copy.class_names = model.class_names
    return copy


# ------------------------------------------------------------------------------------ sharded checkpoints
def _dcp_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def write_sharded_checkpoint(run_dir: str | os.PathLike, step: int, model: nn.Module,
                             optimizer: torch.optim.Optimizer, state: dict[str, Any], info: distributed.DistInfo,
                             keep: int = 0) -> Path:
    """Every rank writes its shard of the model and optimizer into one temporary folder; rank 0 adds `state`
    (random states, config, ...: no tensors of the model) and the manifest, then renames the folder to
    step_NNNNNNNN. Every rank must call it; all return the final folder."""
    import torch.distributed.checkpoint as dcp

    folder = checkpoints_dir(run_dir)
    final = folder / step_dir_name(step)
    tmp = None
    if info.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=folder)
    tmp = Path(distributed.broadcast_object(tmp, info))
    failed = None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to")  # one process: no group
            dcp.save(_dcp_state(model, optimizer), checkpoint_id=tmp)
    except (OSError, RuntimeError) as e:
        failed = e
    ok = torch.tensor([0.0 if failed else 1.0], device=info.device)
    if info.enabled:
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    if not info.is_main:
        distributed.barrier(info)
        if failed or ok.item() < 1:
            raise failed or OSError(f"{tmp}: another rank could not write its shard")
        return final
    try:
        if failed or ok.item() < 1:
            raise failed or OSError(f"{tmp}: another rank could not write its shard")
        from ..checkpoints.io import atomic_path, fsync_dir

        with atomic_path(tmp / STATE) as path:
            torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, "step": int(step), "sharded": True,
                        **state}, path)
        for name in os.listdir(tmp):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        names = tuple(sorted(n for n in os.listdir(tmp) if n != MANIFEST))
        write_manifest(tmp, step, names)
        fsync_dir(tmp)
        replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        distributed.barrier(info)
        raise
    prune(run_dir, keep)
    distributed.barrier(info)
    return final


def is_sharded_checkpoint(folder: str | os.PathLike) -> bool:
    return (Path(folder) / DCP_METADATA).is_file()


def load_sharded_checkpoint(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a sharded checkpoint's model and optimizer into `model` (sharded or not, on any number of ranks,
    after `wrap_model`) and `optimizer`; a UsageError naming the folder when they do not fit."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _dcp_state(model, optimizer)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to")
            dcp.load(state, checkpoint_id=Path(folder))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        text = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UsageError(f"--resume {folder}: the sharded checkpoint does not fit this model and optimizer "
                         f"({type(e).__name__}: {text})") from None


def read_sharded_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The non-tensor training state (step, random states, config) of a sharded checkpoint, checked against its
    manifest."""
    from .checkpoint import verify_manifest

    folder = Path(folder)
    verify_manifest(folder)
    state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or not state.get("sharded"):
        raise UsageError(f"{folder / STATE}: not a sharded vitkit training state")
    return state


def describe_memory(device: torch.device) -> dict[str, float]:
    """Peak memory of this process so far, in MiB: the accelerator's allocator on a GPU, else the resident set."""
    if device.type == "cuda":
        return {"peak_mib": torch.cuda.max_memory_allocated(device) / 2**20}
    import resource

    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


__all__ = ["ParallelConfig", "wrap_model", "checkpoint_blocks", "full_state_dict", "unsharded_copy",
           "write_sharded_checkpoint", "load_sharded_checkpoint", "read_sharded_state", "is_sharded_checkpoint",
           "is_sharded", "MODES"]
