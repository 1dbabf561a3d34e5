"""Mean attention distance (the paper's Figure 7 right, Appendix D.7): for every head at every depth, how far in
pixels a patch looks, "analogous to receptive field size in CNNs".

For one image and one head: for each query patch, the distance in pixels between its centre and every key patch's
centre, weighted by the attention weights; averaged over the query patches. Then averaged over images.

The class token has no position, so it is left out on both sides: queries are the patch tokens only, and each query's
weights over the patch keys are renormalised to sum to one (the distance the query looks at, given it looks at a
patch). A query that puts all its weight on the class token would be undefined; it counts as distance 0.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from ..configs import to_pair
from .attention import capture_attention, effective_patch_size, grid_for_images


def patch_centres(grid_size, patch_size) -> np.ndarray:
    """Pixel coordinates (y, x) of every patch centre in row-major order: (gh * gw, 2)."""
    gh, gw = to_pair(grid_size)
    ph, pw = to_pair(patch_size)
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    return np.stack([(rows.ravel() + 0.5) * ph, (cols.ravel() + 0.5) * pw], axis=1).astype(np.float64)


def patch_distances(grid_size, patch_size) -> np.ndarray:
    """Euclidean distance in pixels between every pair of patch centres: (N, N)."""
    centres = patch_centres(grid_size, patch_size)
    return np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1))


def attention_distance(weights: torch.Tensor | np.ndarray, grid_size, patch_size,
                       num_prefix_tokens: int = 0) -> np.ndarray:
    """Mean attention distance per image and head from one layer's weights (B, heads, N, N) -> (B, heads), pixels.

    N = num_prefix_tokens + gh * gw; prefix tokens are dropped as queries and as keys (see the module docstring).
    """
    w = torch.as_tensor(weights).double()
    gh, gw = to_pair(grid_size)
    n = num_prefix_tokens + gh * gw
    if w.dim() != 4 or w.shape[-1] != n or w.shape[-2] != n:
        raise ValueError(f"expected weights of shape (B, heads, {n}, {n}) for a {gh}x{gw} grid with "
                         f"{num_prefix_tokens} prefix token(s), got {tuple(w.shape)}")
    w = w[..., num_prefix_tokens:, num_prefix_tokens:]  # (B, heads, patches, patches)
    total = w.sum(dim=-1, keepdim=True)
    w = torch.where(total > 0, w / total.clamp_min(1e-300), torch.zeros_like(w))
    distances = torch.as_tensor(patch_distances((gh, gw), patch_size), dtype=w.dtype, device=w.device)
    per_query = (w * distances).sum(dim=-1)  # (B, heads, patches)
    return per_query.mean(dim=-1).cpu().numpy()


@torch.no_grad()
def mean_attention_distance(model, images: torch.Tensor | Iterable[torch.Tensor],
                            layers: Sequence[int] | None = None) -> np.ndarray:
    """Mean attention distance of every head at every chosen depth (default: all), in pixels of the model's input,
    averaged over all images: (layers, heads).

    `images` is one preprocessed batch (B, C, H, W) or an iterable of such batches (or of (images, labels) pairs).
    """
    batches = [images] if isinstance(images, torch.Tensor) else images
    patch = effective_patch_size(model)
    prefix = model.num_prefix_tokens
    was_training = model.training
    model.eval()
    totals: dict[int, np.ndarray] = {}
    count = 0
    try:
        for batch in batches:
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            grid = grid_for_images(model, batch)

            def reduce(index, weights, grid=grid):
                return attention_distance(weights, grid, patch, prefix).sum(axis=0)  # (heads,), summed over images

            with capture_attention(model, layers=layers, reduce=reduce) as captured:
                model(batch)
            for index, sums in captured.items():
                totals[index] = totals.get(index, 0) + sums[0]
            count += batch.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("mean_attention_distance got no images")
    return np.stack([totals[i] / count for i in sorted(totals)])
