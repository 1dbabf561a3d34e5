"""Mimetic initialisation of self-attention (Trockman & Kolter, "Mimetic Initialization of Self-Attention Layers",
ICML 2023): a training-free change of the starting point, not of the model. Each head's query-key product starts
near a scaled identity plus noise, W_q^T W_k ~ a1 Z + b1 I, so that a token first attends to tokens like itself,
and each block's value-output product near a negative identity plus noise, W_o W_v ~ a2 Z - b2 I, as in the
attention layers of trained ViTs. Z has N(0, 1/D) entries; the factors come from the product's singular value
decomposition, truncated to the head's dimension for the query-key part.

    from vitkit.models.mimetic import mimetic_init_
    model.init_weights(); mimetic_init_(model)
"""

from __future__ import annotations

import torch
from torch import nn

QK = (0.7, 0.7)  # (a1, b1): the paper's defaults
VO = (0.4, 0.4)  # (a2, b2)


def _factors(target: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B), each (rank, D), with A^T B the best rank-`rank` approximation of the (D, D) `target`."""
    u, s, vh = torch.linalg.svd(target)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).T, root[:, None] * vh[:rank]


@torch.no_grad()
def mimetic_init_(model: nn.Module, qk: tuple[float, float] = QK, vo: tuple[float, float] = VO,
                  generator: torch.Generator | None = None) -> nn.Module:
    """Overwrite the query, key, value and output projections of every self-attention layer of `model` (the
    encoder's `Attention` modules, fused `qkv` and `proj`) with mimetic values; biases are zeroed. Returns `model`."""
    from .vit import Attention

    layers = [m for m in model.modules() if isinstance(m, Attention)]
    if not layers:
        raise ValueError("mimetic initialisation: the model has no self-attention layers")
    for layer in layers:
        width, heads, dim = layer.qkv.in_features, layer.num_heads, layer.head_dim
        weight = layer.qkv.weight  # (3D, D): the q, k, v kernels, head by head within each
        eye = torch.eye(width, dtype=torch.float64)

        def noise():
            return torch.randn(width, width, generator=generator, dtype=torch.float64) / width ** 0.5

        for h in range(heads):
            q, k = _factors(qk[0] * noise() + qk[1] * eye, dim)
            start = h * dim  # head h's rows of the query kernel; its key rows are `width` further down
            weight[start:start + dim] = q.to(weight.dtype)
            weight[width + start:width + start + dim] = k.to(weight.dtype)
        # out = x W_v^T W_o^T = x (W_o W_v)^T: W_o = A^T, W_v = B with A^T B = a2 Z - b2 I
        o, v = _factors(vo[0] * noise() - vo[1] * eye, width)
        weight[2 * width:] = v.to(weight.dtype)
        layer.proj.weight.copy_(o.T.to(weight.dtype))
        for bias in (layer.qkv.bias, layer.proj.bias):
            if bias is not None:
                bias.zero_()
    return model


__all__ = ["mimetic_init_", "QK", "VO"]
