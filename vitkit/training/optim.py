"""The optimizer, the learning-rate schedule and the weight average, as the paper's Appendix B.1 describes them.

Pre-training: Adam (beta1 0.9, beta2 0.999) with decoupled weight decay (AdamW), not applied to biases, norms,
position embeddings or the class token; a linear warm-up, then linear or cosine decay. Fine-tuning: SGD with
momentum 0.9, no weight decay, cosine decay. Both clip the global gradient norm at 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights (matrices, kernels) and everything exempt (ndim <= 1: biases, norm scales; and
    the model's `no_weight_decay()` names: position embeddings, class token)."""
    exempt_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name in exempt_names or name.split(".")[-1] in exempt_names:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


@dataclass(frozen=True)
class OptimizerSettings:
    """What the optimizer needs from the training config (a small piece of it, so the flow of each value is
    visible: the recipe's `lr` reaches the optimizer through `from_config` and nowhere else)."""
    optimizer: str  # "adam" (AdamW: decoupled weight decay) or "sgd" (with momentum)
    lr: float  # the peak rate; the schedule sets each step's
    weight_decay: float  # on the "decay" group only (see param_groups)
    beta1: float  # Adam's
    beta2: float
    momentum: float  # SGD's

    @classmethod
    def from_config(cls, c) -> "OptimizerSettings":
        return cls(optimizer=c.optimizer, lr=c.lr, weight_decay=c.weight_decay, beta1=c.beta1, beta2=c.beta2,
                   momentum=c.momentum)


def build_optimizer(model: nn.Module, settings: OptimizerSettings) -> torch.optim.Optimizer:
    groups = param_groups(model, settings.weight_decay)
    if settings.optimizer == "adam":
        kwargs = dict(lr=settings.lr, betas=(settings.beta1, settings.beta2), eps=1e-8,
                      weight_decay=settings.weight_decay)
        try:  # one fused kernel for the whole update (CPU and CUDA); AdamW refuses devices and dtypes it lacks
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            return torch.optim.AdamW(groups, **kwargs)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}")


def learning_rate(step: int, total_steps: int, peak: float, warmup_steps: int = 0, schedule: str = "cosine",
                  end: float = 0.0) -> float:
    """The rate for optimizer step `step` (0-based, the last run being total_steps - 1): a linear warm-up from
    peak / warmup_steps to peak at step warmup_steps - 1, then a decay from peak at step warmup_steps to `end`
    at the last step. (A decay phase of a single step has nothing to decay over and runs at the peak.)"""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    decay_steps = total_steps - 1 - warmup_steps  # the steps after the first one of the decay
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0) if decay_steps > 0 else 0.0
    if schedule == "linear":
        return end + (peak - end) * (1.0 - progress)
    if schedule == "cosine":
        return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


class EMA:
    """Polyak averaging of the parameters (and buffers copied): ema = d * ema + (1 - d) * weights.

    The decay d is `decay` from the first update on, as in the paper's code (Appendix B.1.1: 0.9999 for the
    ImageNet fine-tuning). With `warmup`, d = min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's
    `num_updates` warm-up, timm's old ModelEma), which keeps short runs from being dominated by the initial
    weights but reaches 0.9999 only after ~90k updates.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False):
        self.decay = decay
        self.warmup = warmup
        self.shadow = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                       for k, v in model.state_dict().items()}

    def decay_at(self, num_updates: int) -> float:
        """The decay of the update after `num_updates` earlier ones."""
        return min(self.decay, (1.0 + num_updates) / (10.0 + num_updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        d = self.decay_at(num_updates)
        current = model.state_dict()
        floats = [k for k, v in self.shadow.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.shadow[k] for k in floats], [current[k].detach().float() for k in floats], 1.0 - d)
        for k, v in self.shadow.items():
            if not v.is_floating_point():
                v.copy_(current[k])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:3]}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
