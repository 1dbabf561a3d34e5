"""Principal components of the patch-embedding filters (the paper's Figure 7 left: "RGB embedding filters, first 28
principal components"). The embedding E is a conv whose D kernels (C, ph, pw) act on pixels; PCA over those D
kernels shows the basis functions the model uses for each patch's fine structure."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UsageError


def principal_components(vectors: np.ndarray, num_components: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the rows of `vectors` (M, K): the first components (n, K), unit length, ordered by explained variance,
    and the fraction of the total variance each explains (n,). Rows are centred first. Each component's sign is
    fixed so that its entry of largest magnitude is positive (PCA itself leaves the sign free)."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a matrix (M, K), got shape {x.shape}")
    x = x - x.mean(axis=0, keepdims=True)
    _, singular_values, vt = np.linalg.svd(x, full_matrices=False)
    n = min(num_components, vt.shape[0])
    components = vt[:n]
    signs = np.sign(components[np.arange(n), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    variance = singular_values**2
    total = variance.sum()
    explained = variance[:n] / total if total > 0 else np.zeros(n)
    return components, explained


@torch.no_grad()
def filter_components(model, num_components: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """The first principal components of the patch-embedding filters as images, (n, C, ph, pw), and the fraction
    of the filters' variance each explains (n,). Refuses hybrid models, whose embedding sees ResNet features."""
    if model.config.resnet is not None:
        raise UsageError("filters: this is a hybrid model; its patch embedding acts on ResNet feature maps "
                         f"({model.patch_embed.proj.in_channels} channels), not on pixels, so its filters are not "
                         "images")
    if num_components < 1:
        raise UsageError(f"filters: need at least one component, got {num_components}")
    weight = model.patch_embed.proj.weight.detach().float().cpu().numpy()  # (D, C, ph, pw)
    components, explained = principal_components(weight.reshape(weight.shape[0], -1), num_components)
    return components.reshape(-1, *weight.shape[1:]), explained
