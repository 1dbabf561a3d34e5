"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a batch, with soft targets.

Each micro-batch draws from its own generator, seeded by (seed, step, micro-batch), so a resumed run mixes
exactly as the uninterrupted one did. The draws (Mixup or CutMix, the ratio, the box) are the same for the whole
micro-batch, and image i of the micro-batch is mixed with image i ^ 1, its neighbour (0 with 1, 2 with 3, ...;
an odd last image with itself): a pairing of global positions that needs nothing from another process when each
rank's shard has an even size, so that N processes mix exactly as one does (`mix_shard`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    off = smoothing / num_classes
    return F.one_hot(labels, num_classes).float() * (1.0 - smoothing) + off


def partners(n: int, device=None) -> torch.Tensor:
    """The index each of n images is mixed with: i ^ 1, or i itself for an odd last image."""
    index = torch.arange(n, device=device) ^ 1
    return torch.where(index < n, index, torch.arange(n, device=device))


def mix_batch(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, mixup_alpha: float = 0.0,
              cutmix_alpha: float = 0.0, prob: float = 1.0, smoothing: float = 0.0, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, soft targets): each image mixed with its neighbour, by Mixup or CutMix (one of them at random
    when both are on), with probability `prob`. Returns the images unchanged with (smoothed) one-hot targets
    otherwise."""
    rng = np.random.default_rng(seed)
    targets = soft_targets(labels, num_classes, smoothing)
    use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
    if not (use_mixup or use_cutmix) or rng.random() >= prob:
        return images, targets
    if use_mixup and use_cutmix:
        use_mixup = rng.random() < 0.5
        use_cutmix = not use_mixup
    other = partners(images.shape[0], images.device)
    other_images, other_targets = images[other], targets[other]
    if use_mixup:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        images = images * lam + other_images * (1.0 - lam)
    else:
        lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
        h, w = images.shape[-2:]
        cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
        x0, x1 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
        images = images.clone()
        images[..., y0:y1, x0:x1] = other_images[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually kept
    return images, targets * lam + other_targets * (1.0 - lam)


def mix_shard(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, rank: int = 0, world_size: int = 1,
              **options) -> tuple[torch.Tensor, torch.Tensor]:
    """`mix_batch` of the global micro-batch whose rank-th equal shard this is, returning this rank's part. An
    even shard holds its own pairs; an odd one gathers the whole micro-batch from the other ranks first."""
    mixing = options.get("mixup_alpha", 0.0) > 0 or options.get("cutmix_alpha", 0.0) > 0
    if world_size == 1 or not mixing or images.shape[0] % 2 == 0:
        return mix_batch(images, labels, num_classes, **options)
    import torch.distributed as dist

    shard = images.shape[0]
    gathered_images = [torch.empty_like(images) for _ in range(world_size)]
    gathered_labels = [torch.empty_like(labels) for _ in range(world_size)]
    dist.all_gather(gathered_images, images.contiguous())
    dist.all_gather(gathered_labels, labels.contiguous())
    mixed, targets = mix_batch(torch.cat(gathered_images), torch.cat(gathered_labels), num_classes, **options)
    part = slice(rank * shard, (rank + 1) * shard)
    return mixed[part], targets[part]
