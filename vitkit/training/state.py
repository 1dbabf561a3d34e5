"""What a checkpoint keeps beyond the weights: the global random states, and checks that a loaded optimizer or EMA
state fits the model it is loaded into."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": torch.from_numpy(numpy_state[1].astype(np.int64)), "numpy_pos": int(numpy_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate((3, tuple(int(v) for v in state["python"]), None))
    if "numpy" in state:
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state.get("numpy_pos", 624)),
                             0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Every per-parameter tensor of a loaded optimizer state has its parameter's shape (load_state_dict checks
    the groups, not the tensors: a wrong one would fail steps later, or broadcast silently)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if value is None or (torch.is_tensor(value) and value.dim() == 0 and value.is_floating_point()):
                    continue  # an absent momentum buffer, a step count
                if not torch.is_tensor(value) or not value.is_floating_point() or value.shape != param.shape:
                    found = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
                    raise ValueError(f"optimizer state {key!r} is {found}, expected {tuple(param.shape)} floats")


def check_tensors_like(state: Any, reference: dict[str, torch.Tensor], what: str) -> None:
    if not isinstance(state, dict):
        raise TypeError(f"{what} state is a {type(state).__name__}, expected a dict of tensors")
    for key, ref in reference.items():
        value = state.get(key)
        if not torch.is_tensor(value) or value.shape != ref.shape:
            found = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise ValueError(f"{what} entry {key!r} is {found}, expected {tuple(ref.shape)}")


def restore(state: dict[str, Any], optimizer: torch.optim.Optimizer, scaler, ema, where,
            load_optimizer=None) -> None:
    """Load a checkpoint's optimizer, grad scaler, EMA and random states into this run's, keeping this run's
    optimizer settings (betas, weight decay, ...: the config's, not whatever the file says); a UsageError naming
    `where` when the saved state does not fit. `load_optimizer()`, when given, loads the optimizer instead
    (a sharded checkpoint's, with the model's shards)."""
    from ..errors import UsageError

    try:
        settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
        if load_optimizer is not None:
            load_optimizer()
        else:
            optimizer.load_state_dict(state["optimizer"])
        for group, own in zip(optimizer.param_groups, settings):
            group.update(own)
        check_optimizer_state(optimizer)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            check_tensors_like(state["ema"], ema.shadow, "EMA")
            ema.load_state_dict(state["ema"])
        if state.get("rng"):
            set_rng_state(state["rng"])
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError) as e:
        raise UsageError(f"--resume {where}: the saved state does not fit this run ({type(e).__name__}: "
                         f"{str(e).strip()[:300]}); was the model or optimizer changed?") from None
