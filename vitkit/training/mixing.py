"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a batch, with soft targets.

Each batch draws from its own seeded generator, so a resumed run mixes exactly as the uninterrupted one did.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    off = smoothing / num_classes
    return F.one_hot(labels, num_classes).float() * (1.0 - smoothing) + off


def mix_batch(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, mixup_alpha: float = 0.0,
              cutmix_alpha: float = 0.0, prob: float = 1.0, smoothing: float = 0.0, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, soft targets): the batch mixed with its reverse, by Mixup or CutMix (one of them at random when
    both are on), with probability `prob`. Returns the images unchanged with (smoothed) one-hot targets otherwise."""
    rng = np.random.default_rng(seed)
    targets = soft_targets(labels, num_classes, smoothing)
    use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
    if not (use_mixup or use_cutmix) or rng.random() >= prob:
        return images, targets
    if use_mixup and use_cutmix:
        use_mixup = rng.random() < 0.5
        use_cutmix = not use_mixup
    flipped_images, flipped_targets = images.flip(0), targets.flip(0)
    if use_mixup:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        images = images * lam + flipped_images * (1.0 - lam)
    else:
        lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
        h, w = images.shape[-2:]
        cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
        x0, x1 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
        images = images.clone()
        images[..., y0:y1, x0:x1] = flipped_images[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually kept
    return images, targets * lam + flipped_targets * (1.0 - lam)
