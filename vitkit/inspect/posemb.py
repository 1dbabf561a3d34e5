"""Position-embedding similarity (the paper's Figure 7 centre): for every patch position, the cosine similarity of
its embedding to the embeddings of all other positions, laid out on the patch grid."""

from __future__ import annotations

import numpy as np
import torch

from ..configs import to_pair
from ..errors import UsageError


def cosine_similarity_grid(embeddings: torch.Tensor | np.ndarray, grid_size) -> np.ndarray:
    """Embeddings of the patch positions in row-major order, (N, D) or (1, N, D) -> (gh, gw, gh, gw), where
    [r, c] is the map of position (r, c)'s similarity to every position."""
    e = torch.as_tensor(embeddings).detach().double().cpu()
    if e.dim() == 3 and e.shape[0] == 1:
        e = e[0]
    gh, gw = to_pair(grid_size)
    if e.dim() != 2 or e.shape[0] != gh * gw:
        raise ValueError(f"expected {gh * gw} embeddings of shape (N, D) for a {gh}x{gw} grid, got {tuple(e.shape)}")
    norms = e.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, e / norms.clamp_min(1e-300), torch.zeros_like(e))
    similarity = unit @ unit.T  # (N, N)
    return similarity.reshape(gh, gw, gh, gw).numpy()


def patch_position_embeddings(model, grid_size=None) -> torch.Tensor:
    """The embeddings added to the patch tokens, without any prefix (class token) slot: (gh * gw, D)."""
    pos = model.position_embeddings(tuple(to_pair(grid_size)) if grid_size is not None else None)
    if pos is None:
        raise UsageError("the model has no position embeddings (posemb='none'), so there is nothing to compare")
    pos = pos[:, model.config.num_posemb_prefix_tokens:]
    return pos[0].detach()


@torch.no_grad()
def position_embedding_similarity(model, grid_size=None) -> np.ndarray:
    """Cosine similarity of every patch position's embedding to all others: (gh, gw, gh, gw).

    Works for every kind of position embedding (learned, learned 2D, fixed sin-cos); `grid_size` resamples to
    another grid first, as the model would for another input size.
    """
    grid = tuple(to_pair(grid_size)) if grid_size is not None else tuple(model.grid_size)
    return cosine_similarity_grid(patch_position_embeddings(model, grid), grid)
