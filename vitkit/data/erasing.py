"""Random erasing (Zhong et al. 2020) with timm's defaults, which DeiT trains with: with probability p, one box
of 2% to 1/3 of the image's area, aspect ratio log-uniform in 0.3 to 1/0.3, is filled with N(0, 1) noise in
the normalised image (timm's `RandomErasing(mode="pixel")`). Like timm, a box that does not fit inside the
image is drawn again, up to 10 times; an image whose 10 boxes all fail stays as it is.

One batched function serves both data paths: the tensor pipeline calls it on a batch with its generator, the
PIL pipeline on each image with the global generator (which `TransformedImages` seeds per image).
"""

from __future__ import annotations

import math

import torch

from .draws import draws_for

MIN_AREA, MAX_AREA = 0.02, 1 / 3  # shares of the image (timm's RandomErasing defaults)
MIN_ASPECT = 0.3  # height / width from 0.3 to 1 / 0.3
ATTEMPTS = 10


def erase_boxes(x: torch.Tensor, probability: float, generator=None) -> torch.Tensor:
    """(B, C, H, W) normalised float images -> the same with one noise box in each image chosen with
    `probability`. `generator`: a torch generator, None (the global one) or per-image draws (`data.draws`)."""
    B, C, H, W = x.shape
    draws = draws_for(B, generator)
    chosen = draws.rand() < probability
    area = (MIN_AREA + (MAX_AREA - MIN_AREA) * draws.rand(ATTEMPTS)) * (H * W)
    log_aspect = math.log(MIN_ASPECT) + (-2 * math.log(MIN_ASPECT)) * draws.rand(ATTEMPTS)
    aspect = log_aspect.exp()
    h = (area * aspect).sqrt().round().long()  # (B, ATTEMPTS)
    w = (area / aspect).sqrt().round().long()
    fits = (h < H) & (w < W) & (h > 0) & (w > 0)
    first = torch.where(fits.any(dim=1), fits.float().argmax(dim=1), torch.zeros(B, dtype=torch.long))
    chosen = chosen & fits.any(dim=1)
    h = h.gather(1, first[:, None]).squeeze(1)
    w = w.gather(1, first[:, None]).squeeze(1)
    top = (draws.rand() * (H - h + 1)).long()  # uniform in 0 .. H - h
    left = (draws.rand() * (W - w + 1)).long()
    rows = torch.arange(H)[None, :]
    cols = torch.arange(W)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (B, H)
    inside_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (B, W)
    box = (inside_rows[:, :, None] & inside_cols[:, None, :] & chosen[:, None, None])[:, None]  # (B, 1, H, W)
    noise = draws.randn(C, H, W).to(x.dtype)
    return torch.where(box.to(x.device), noise.to(x.device), x)


class RandomErasing:
    """The PIL pipeline's step, after normalisation: (C, H, W) -> (C, H, W), from the global generator."""

    def __init__(self, probability: float):
        self.probability = probability

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return erase_boxes(x[None], self.probability)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(probability={self.probability})"


__all__ = ["erase_boxes", "RandomErasing", "MIN_AREA", "MAX_AREA", "MIN_ASPECT"]
