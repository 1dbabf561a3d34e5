"""Attention capture, attention rollout (the paper's Figure 6) and the class token's attention per layer and head.

Only the layers asked for compute their weights: capture sets `keep_weights` on those layers alone (the others keep
the fused `scaled_dot_product_attention` path) and hands each layer's (B, heads, N, N) weights to a reducer the
moment the layer has run, then drops them, so rollout over a deep model holds one layer's weights at a time.

Token layout: `model.num_prefix_tokens` prefix tokens first ([class], [distillation], registers), then the patches
in row-major order over the grid.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import UsageError


def effective_patch_size(model) -> tuple[int, int]:
    """Pixels covered by one patch token: the patch size, times the ResNet stem's stride for hybrids."""
    c = model.config
    return (c.patch_size[0] * c.stem_stride, c.patch_size[1] * c.stem_stride)


def grid_for_images(model, images: torch.Tensor) -> tuple[int, int]:
    """The patch grid the model uses for these images (its own grid, or another one for dynamic image size)."""
    ph, pw = effective_patch_size(model)
    return (images.shape[-2] // ph, images.shape[-1] // pw)


def _layer_indices(model, layers: Sequence[int] | None) -> list[int]:
    depth = len(model.attention_layers())
    if layers is None:
        return list(range(depth))
    chosen = []
    for index in layers:
        if not -depth <= index < depth:
            raise UsageError(f"layer {index} does not exist: the model has {depth} blocks (0 to {depth - 1})")
        chosen.append(index % depth)
    return sorted(set(chosen))


@contextmanager
def capture_attention(model, layers: Sequence[int] | None = None,
                      reduce: Callable[[int, torch.Tensor], object] | None = None) -> Iterator[dict[int, list]]:
    """Within the block, the chosen layers (default: all) compute their attention weights on every forward.

    Yields a dict {layer index: [one entry per forward]}; an entry is `reduce(layer_index, weights)` where
    weights are (B, heads, N, N) softmax weights, or the weights themselves without a reducer. On exit the layers'
    `keep_weights` flags are restored and their `last_weights` cleared.

        with capture_attention(model, layers=[0, 5]) as captured:
            model(images)
        first_layer = captured[0][0]  # (B, heads, N, N)
    """
    attention_layers = model.attention_layers()
    indices = _layer_indices(model, layers)
    captured: dict[int, list] = {i: [] for i in indices}
    saved_flags = [layer.keep_weights for layer in attention_layers]
    handles = []

    def make_hook(index):
        def hook(module, inputs, output):
            weights = module.last_weights
            if weights is None:  # cannot happen while keep_weights is set, unless a subclass skips it
                raise RuntimeError(f"attention layer {index} did not record its weights")
            captured[index].append(weights if reduce is None else reduce(index, weights))
            module.last_weights = None  # hold no layer's weights past its own reducer
        return hook

    try:
        for i in indices:
            attention_layers[i].keep_weights = True
            handles.append(attention_layers[i].register_forward_hook(make_hook(i)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
        for layer, flag in zip(attention_layers, saved_flags):
            layer.keep_weights = flag
            layer.last_weights = None


def _fuse_heads(weights: torch.Tensor, head_fusion: str) -> torch.Tensor:
    if head_fusion == "mean":
        return weights.mean(dim=1)
    if head_fusion == "max":
        return weights.amax(dim=1)
    if head_fusion == "min":
        return weights.amin(dim=1)
    raise ValueError(f"head_fusion={head_fusion!r}, expected 'mean', 'max' or 'min'")


def rollout_step(rollout: torch.Tensor | None, weights: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """Fold one layer into a rollout: fuse the heads, add the identity for the residual, renormalise the rows, and
    multiply onto the rollout of the layers below. weights (B, heads, N, N) -> (B, N, N)."""
    fused = _fuse_heads(weights.float(), head_fusion)  # (B, N, N)
    fused = fused + torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
    fused = fused / fused.sum(dim=-1, keepdim=True)
    return fused if rollout is None else fused @ rollout


def rollout(attentions: Sequence[torch.Tensor | np.ndarray], head_fusion: str = "mean") -> np.ndarray:
    """Attention rollout (Abnar and Zuidema, 2020) of per-layer weights, first layer first.

    Each entry is (B, heads, N, N), (heads, N, N) or (N, N). Returns (B, N, N) (or (N, N) for unbatched input):
    row i says how much of token i's final state flows from each input token, A_L' ... A_1' with
    A' = rownorm(mean_heads(A) + I).
    """
    if not attentions:
        raise ValueError("rollout needs the weights of at least one layer")
    unbatched = torch.as_tensor(attentions[0]).dim() < 4
    result = None
    for weights in attentions:
        w = torch.as_tensor(weights).float()
        while w.dim() < 4:
            w = w.unsqueeze(0)  # (N, N) -> (1, N, N) heads -> (1, 1, N, N) batch
        result = rollout_step(result, w, head_fusion)
    out = result.cpu().numpy()
    return out[0] if unbatched else out


def _query_rows(model, weights: torch.Tensor) -> torch.Tensor:
    """The rows that stand for the image: the class token's, or, without one, the mean over the patch tokens
    (what global average pooling reads). (B, ..., N, N) -> (B, ..., N)."""
    if model.config.class_token:
        return weights[..., 0, :]
    return weights[..., model.num_prefix_tokens:, :].mean(dim=-2)  # the patch tokens' rows (not the registers')


@torch.no_grad()
def attention_rollout(model, images: torch.Tensor, head_fusion: str = "mean", normalize: bool = True) -> np.ndarray:
    """The paper's Figure 6: how much each patch contributes to the class token's final state, rolled out through
    every layer. images (B, C, H, W), preprocessed -> (B, gh, gw).

    Models without a class token (pool='gap') use the mean of the patch tokens' rows. With normalize=True each map
    is divided by its maximum (the form drawn over the image); otherwise the rollout values themselves are returned.
    """
    was_training = model.training
    model.eval()
    grid = grid_for_images(model, images)
    state: dict[str, torch.Tensor | None] = {"rollout": None}

    def fold(index, weights):
        state["rollout"] = rollout_step(state["rollout"], weights, head_fusion)

    try:
        with capture_attention(model, reduce=fold):
            model(images)
    finally:
        model.train(was_training)
    rolled = state["rollout"]  # (B, N, N)
    maps = _query_rows(model, rolled)[:, model.num_prefix_tokens:]  # (B, gh * gw)
    maps = maps.reshape(-1, *grid)
    if normalize:
        maps = maps / maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return maps.cpu().numpy()


@torch.no_grad()
def class_token_attention(model, images: torch.Tensor, layers: Sequence[int] | None = None) -> np.ndarray:
    """The class token's attention to every patch, per layer and head: (B, layers, heads, gh, gw).

    Without a class token, the mean of the patch tokens' attention rows. `layers` picks blocks (default: all); only
    those compute their weights, and only the needed row of each is kept.
    """
    was_training = model.training
    model.eval()
    grid = grid_for_images(model, images)
    prefix = model.num_prefix_tokens

    def class_row(index, weights):
        return _query_rows(model, weights)[..., prefix:].float().cpu()  # (B, heads, gh * gw)

    try:
        with capture_attention(model, layers=layers, reduce=class_row) as captured:
            model(images)
    finally:
        model.train(was_training)
    rows = torch.stack([captured[i][0] for i in sorted(captured)], dim=1)  # (B, layers, heads, gh * gw)
    return rows.reshape(*rows.shape[:3], *grid).numpy()
