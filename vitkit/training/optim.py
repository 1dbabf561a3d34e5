"""The optimizer, the learning-rate schedule and the weight average, as the paper's Appendix B.1 describes them.

Pre-training: Adam (beta1 0.9, beta2 0.999) with decoupled weight decay (AdamW), not applied to biases, norms,
position embeddings or the class token; a linear warm-up, then linear or cosine decay. Fine-tuning: SGD with
momentum 0.9, no weight decay, cosine decay. Both clip the global gradient norm at 1. Beyond the paper: Muon
(Jordan et al. 2024) for the encoder's weight matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim._muon import _adjust_lr  # Muon's per-matrix learning-rate scale, as torch.optim.Muon applies it


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


# the momentum when the config leaves it unset: SGD's usual (the paper's fine-tuning) and torch.optim.Muon's default
DEFAULT_MOMENTUM = {"sgd": 0.9, "muon": 0.95}
# the settings each optimizer reads of beta1, beta2 and momentum (Muon's AdamW part reads the betas)
OPTIMIZER_READS = {"adam": ("beta1", "beta2"), "sgd": ("momentum",), "muon": ("beta1", "beta2", "momentum")}


@dataclass(frozen=True)
class OptimizerSettings:
    """What the optimizer needs from the training config (a small piece of it, so the flow of each value is
    visible: the recipe's `lr` reaches the optimizer through `from_config` and nowhere else)."""
    optimizer: str  # "adam" (AdamW: decoupled weight decay), "sgd" (with momentum) or "muon" (Muon and AdamW)
    lr: float  # the peak rate; the schedule sets each step's
    weight_decay: float  # on the "decay" group only (see param_groups)
    beta1: float  # Adam's
    beta2: float
    momentum: float | None  # SGD's and Muon's (None for Adam, which has beta1)

    @classmethod
    def from_config(cls, c) -> "OptimizerSettings":
        momentum = DEFAULT_MOMENTUM.get(c.optimizer) if c.momentum is None else c.momentum
        return cls(optimizer=c.optimizer, lr=c.lr, weight_decay=c.weight_decay, beta1=c.beta1, beta2=c.beta2,
                   momentum=momentum)


def _adamw(groups: list[dict], settings: OptimizerSettings) -> torch.optim.AdamW:
    kwargs = dict(lr=settings.lr, betas=(settings.beta1, settings.beta2), eps=1e-8, weight_decay=settings.weight_decay)
    try:  # one fused kernel for the whole update (CPU and CUDA); AdamW refuses devices and dtypes it lacks
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, **kwargs)


def muon_parameters(model: nn.Module) -> list[str]:
    """The parameters Muon updates: the weight matrices of the encoder blocks (attention's qkv and output
    projections, the MLP's two layers). Embeddings, the stem, norms, biases and the head stay with AdamW, as Muon's
    authors advise."""
    return [name for name, param in model.named_parameters()
            if param.requires_grad and param.ndim == 2 and name.startswith("blocks.") and name.endswith(".weight")]


def _orthogonalise(updates: list[torch.Tensor], coefficients: tuple[float, float, float], steps: int,
                   eps: float) -> list[torch.Tensor]:
    """torch.optim.Muon's Newton-Schulz iteration (in bfloat16, each matrix taken with no more rows than
    columns, scaled to unit Frobenius norm), run on a stack of same-shaped matrices at once: 15 batched products
    instead of 15 per matrix."""
    a, b, c = coefficients
    tall = updates[0].size(0) > updates[0].size(1)
    x = torch.stack([u.T if tall else u for u in updates]).bfloat16()  # (n, rows, cols), rows <= cols
    x = x / x.flatten(1).norm(dim=1).clamp(min=eps)[:, None, None]
    for _ in range(steps):
        gram = x @ x.mT  # (n, rows, rows)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return [o.T if tall else o for o in x.unbind(0)]


class BatchedMuon(torch.optim.Muon):
    """torch.optim.Muon (same settings, same state, same update) with the orthogonalisation of same-shaped
    matrices batched (a ViT has a few shapes, each repeated in every block)."""

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("BatchedMuon.step takes no closure")
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)
            lr, decay, momentum = float(group["lr"]), group["weight_decay"], group["momentum"]
            updates = []
            for grad, buffer in zip(grads, buffers):
                buffer.lerp_(grad, 1 - momentum)
                updates.append(grad.lerp(buffer, momentum) if group["nesterov"] else buffer)
            same_shape: dict[tuple[int, int], list[int]] = {}
            for i, update in enumerate(updates):
                same_shape.setdefault(tuple(update.shape), []).append(i)
            for indices in same_shape.values():
                ortho = _orthogonalise([updates[i] for i in indices], group["ns_coefficients"], group["ns_steps"],
                                       group["eps"])
                for i, update in zip(indices, ortho):
                    params[i].mul_(1 - lr * decay)
                    params[i].add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], params[i].shape))


class MuonAdamW:
    """Muon (`BatchedMuon`: momentum, then the update orthogonalised by a Newton-Schulz iteration) for the encoder
    blocks' weight matrices and AdamW for every other parameter, as one optimizer: `param_groups` are both
    optimizers' groups (the schedule sets each one's `lr`), `state_dict()` holds both. Muon's step is scaled to the
    RMS of an AdamW step ("match_rms_adamw", Liu et al. 2025), so both take the same learning rate and decay."""

    def __init__(self, model: nn.Module, settings: OptimizerSettings):
        chosen = set(muon_parameters(model))
        if not chosen:
            raise ValueError("optimizer 'muon': the model has no encoder weight matrices for Muon")
        matrices = [param for name, param in model.named_parameters() if name in chosen]
        self.muon = BatchedMuon([{"params": matrices, "name": "muon"}], lr=settings.lr,
                                weight_decay=settings.weight_decay, momentum=settings.momentum, nesterov=True,
                                adjust_lr_fn="match_rms_adamw")
        taken = {id(param) for param in matrices}
        rest = [dict(group, params=[p for p in group["params"] if id(p) not in taken])
                for group in param_groups(model, settings.weight_decay)]
        self.adamw = _adamw([g for g in rest if g["params"]], settings)

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict:
        return {**self.muon.state, **self.adamw.state}

    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MuonAdamW.step takes no closure")
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or set(state) != {"muon", "adamw"}:
            raise ValueError("not the state of optimizer 'muon' (expected its 'muon' and 'adamw' parts)")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def build_optimizer(model: nn.Module, settings: OptimizerSettings):
    """torch.optim.AdamW or SGD over `param_groups`, or a `MuonAdamW`."""
    if settings.optimizer == "muon":
        return MuonAdamW(model, settings)
    groups = param_groups(model, settings.weight_decay)
    if settings.optimizer == "adam":
        return _adamw(groups, settings)
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
