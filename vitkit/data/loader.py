"""Loaders whose order and augmentation are a pure function of (seed, step): what exact resume and
world-size-independent training need.

Step s of a run uses epoch e = s // steps_per_epoch and the b-th slice of epoch e's permutation (seeded by
(seed, e)) of global_batch images. The slice is cut into accum_steps micro-batches, and each micro-batch into
world_size equal shards, one per rank. Every image's augmentation is seeded by (seed, epoch, position in the
epoch), so it is the same whichever rank or loader process draws it, and a run resumed at step s draws exactly
what an uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .datasets import ImageSet

MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps), so that neighbouring keys give unrelated streams."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & MASK64)) & MASK64
        x = (x + 0x9E3779B97F4A7C15) & MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
        x ^= x >> 31
    return x & ((1 << 63) - 1)


class TransformedImages(Dataset):
    """An ImageSet with a transform. Items are keyed by an index, or (index, seed): the seed makes the random
    transform reproducible without touching the caller's random state."""

    def __init__(self, images: ImageSet, transform: Callable, label_map: np.ndarray | None = None):
        self.images = images
        self.transform = transform
        self.label_map = label_map  # data class index -> model class index, where they differ

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.images.load(index)
        if seed is None:
            x = self.transform(image)
        else:  # torchvision draws from the global CPU generator: seed it for this image, then restore it
            generator = torch.default_generator
            saved = generator.get_state()
            generator.manual_seed(seed)
            try:
                x = self.transform(image)
            finally:
                generator.set_state(saved)
        label = int(self.images.labels[index])
        if self.label_map is not None:
            label = int(self.label_map[label])
        return x, label


def epoch_permutation(num_items: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(mix_seed(seed, epoch, 0x5EED)).permutation(num_items)


class StepBatchSampler(Sampler):
    """Micro-batches of (index, seed) keys for one rank, from `start_step` on, for `end_step - start_step` steps.

    With `repeats` = R > 1 (repeated augmentation, Hoffer et al. 2020, as DeiT trains), an epoch's sequence
    holds each image of its permutation R times in a row, and step b takes entries b * global_batch onwards of
    it (DeiT's RASampler): about global_batch / R images R times each, each copy with its own augmentation
    seed. Within the batch the copies are put apart (first every entry's copy 0, then copy 1, ...), so that they
    spread over micro-batches and ranks and no image is mixed with itself. An epoch stays num_items //
    global_batch steps, and so sees a share 1/R of the images, R times each.
    """

    def __init__(self, num_items: int, global_batch: int, accum_steps: int, world_size: int, rank: int, seed: int,
                 start_step: int, end_step: int, repeats: int = 1):
        if global_batch % (accum_steps * world_size):
            raise ValueError(f"global batch {global_batch} is not divisible by accum_steps x world size "
                             f"({accum_steps} x {world_size})")
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        self.num_items = num_items
        self.global_batch = global_batch
        self.accum_steps = accum_steps
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.start_step = start_step
        self.end_step = end_step
        self.repeats = repeats
        self.steps_per_epoch = num_items // global_batch
        if self.steps_per_epoch < 1:
            raise ValueError(f"the batch of {global_batch} is larger than the {num_items} training images")
        self.micro = global_batch // accum_steps  # images per micro-batch over all ranks
        self.shard = self.micro // world_size  # images per micro-batch on this rank

    def __len__(self) -> int:
        return (self.end_step - self.start_step) * self.accum_steps

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        cached_epoch, order = None, None
        for step in range(self.start_step, self.end_step):
            epoch, batch = divmod(step, self.steps_per_epoch)
            if epoch != cached_epoch:
                cached_epoch, order = epoch, epoch_permutation(self.num_items, self.seed, epoch)
            start = batch * self.global_batch
            entries = sorted(range(start, start + self.global_batch), key=lambda t: (t % self.repeats, t))
            for a in range(self.accum_steps):
                first = a * self.micro + self.rank * self.shard  # positions in the global batch
                yield [(int(order[t // self.repeats]), mix_seed(self.seed, epoch, t))
                       for t in entries[first:first + self.shard]]


def auto_workers(images: ImageSet, requested: int, world_size: int = 1) -> int:
    if requested >= 0:
        return requested
    if images.in_memory:
        return 0
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus // max(world_size, 1) - 1))


def train_loader(dataset: TransformedImages, sampler: StepBatchSampler, num_workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False, prefetch_factor=4 if num_workers else None)


def eval_loader(dataset: TransformedImages, batch_size: int, num_workers: int = 0, rank: int = 0,
                world_size: int = 1, pin_memory: bool = False) -> DataLoader:
    """In order; with several ranks, rank r takes images r, r + world_size, ... (results are summed over ranks)."""
    indices = list(range(rank, len(dataset), world_size))
    subset = torch.utils.data.Subset(dataset, indices)
    return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory)
