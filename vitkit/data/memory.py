"""Images decoded once into one uint8 tensor, augmented a batch at a time on tensors: the data path that leaves
both cores of a small CPU to the model.

The usual path (`TransformedImages` + PIL transforms) costs tens of microseconds per image in Python, which is
a tenth or more of a small ViT's training step on 32x32 images. Here every image is decoded once into an
(N, C, H, W) uint8 tensor (150 MB for CIFAR-10), and each batch is cropped, flipped and erased with a handful
of batched tensor operations (a few milliseconds for 256 images).

Batches follow the same `StepBatchSampler` as the usual path, so the data order is the same function of
(seed, step), and each image's augmentation is drawn from its own sampler key, (seed, epoch, position in the
epoch): a resumed run draws what the uninterrupted one drew, and N processes draw what one process draws.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from .datasets import ImageSet
from .draws import SampleDraws, draws_for
from .erasing import erase_boxes
from .loader import mix_seed

CROPS = ("inception", "pad_crop", "resize")


def stack_images(images: ImageSet) -> torch.Tensor:
    """Every image of the set as one (N, 3, H, W) uint8 tensor (decoding the files of a set not held in memory).
    All images must share one size; the error names the first one that does not."""
    first = None
    out = None
    for i in range(len(images)):
        array = images.arrays[i] if images.arrays is not None else np.asarray(images.load(i), dtype=np.uint8)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if first is None:
            first = array.shape
            out = torch.empty((len(images), 3, first[0], first[1]), dtype=torch.uint8)
        if array.shape != first:
            raise UsageError(f"{images.source(i)}: image of size {array.shape[1]}x{array.shape[0]}, but "
                             f"{images.source(0)} is {first[1]}x{first[0]}; the tensor data path (pipeline="
                             "'tensor') needs images of one size: resize them first, or use pipeline='pil'")
        out[i] = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    if out is None:
        raise UsageError(f"{images.name}: no images")
    return out


class TensorAugment:
    """Batched training augmentation of uint8 images: a crop (Inception crop: random area and aspect, resized
    back; pad_crop: reflect-pad and take a random window; resize: none), horizontal flips, random erasing, then
    normalisation to float32 with `mean` / `std` (in units of [0, 1] pixels).

    `random_erasing` is the probability that an image gets one box of noise after normalisation
    (`vitkit.data.erasing`: timm's defaults, 2% to 1/3 of the area, which DeiT uses).
    """

    def __init__(self, mean, std, *, crop: str = "pad_crop", crop_min_area: float = 0.05, crop_padding: int = 4,
                 hflip: bool = True, random_erasing: float = 0.0):
        if crop not in CROPS:
            raise ValueError(f"unknown crop {crop!r}; expected one of {', '.join(CROPS)}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.crop = crop
        self.crop_min_area = crop_min_area
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.random_erasing = random_erasing

    def __call__(self, images: torch.Tensor, generator) -> torch.Tensor:
        """(B, C, H, W) uint8 -> (B, C, H, W) float32, augmented and normalised. `generator`: a torch generator
        for the batch, or each image's own draws (`data.draws.SampleDraws`)."""
        B, C, H, W = images.shape
        generator = draws_for(B, generator)
        flip = (generator.rand() < 0.5) if self.hflip else torch.zeros(B, dtype=torch.bool)
        if self.crop == "pad_crop" and self.crop_padding > 0:
            x = self._pad_crop(images, flip, generator)
        elif self.crop == "inception":
            x = self._inception_crop(images, flip, generator)
        else:
            x = torch.where(flip.view(B, 1, 1, 1), images.flip(-1), images).float()
        x = (x - self.mean) / self.std
        if self.random_erasing > 0:
            x = self._erase(x, generator)
        return x

    def _pad_crop(self, images, flip, generator):
        B, C, H, W = images.shape
        p = self.crop_padding
        padded = F.pad(images.float(), (p, p, p, p), mode="reflect")  # (B, C, H + 2p, W + 2p)
        dy = (generator.rand() * (2 * p + 1)).long().clamp(max=2 * p)
        dx = (generator.rand() * (2 * p + 1)).long().clamp(max=2 * p)
        cols = torch.arange(W).expand(B, W)
        cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flipped image reads its window right to left
        rows = (torch.arange(H)[None, :] + dy[:, None])[:, :, None]  # (B, H, 1)
        cols = (cols + dx[:, None])[:, None, :]  # (B, 1, W)
        batch = torch.arange(B)[:, None, None]
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)

    def _inception_crop(self, images, flip, generator):
        """A box of random area (crop_min_area to 1 of the image) and aspect (3/4 to 4/3), anywhere inside the
        image, resized bilinearly to the image's size; boxes that do not fit are clipped to it."""
        B, C, H, W = images.shape
        area = self.crop_min_area + (1 - self.crop_min_area) * generator.rand()
        log_aspect = (generator.rand() * 2 - 1) * math.log(4 / 3)
        aspect = log_aspect.exp()  # width / height
        box_w = (area * aspect).sqrt().clamp(max=1.0)  # shares of the image's width and height
        box_h = (area / aspect).sqrt().clamp(max=1.0)
        cx = (generator.rand() * 2 - 1) * (1 - box_w)  # centre, in [-1, 1] coordinates
        cy = (generator.rand() * 2 - 1) * (1 - box_h)
        sign = 1.0 - 2.0 * flip.float()
        theta = torch.zeros(B, 2, 3)
        theta[:, 0, 0] = box_w * sign
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = box_h
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, (B, C, H, W), align_corners=False)
        return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _erase(self, x, generator):
        return erase_boxes(x, self.random_erasing, generator)


class TensorBatches:
    """Training batches from an in-memory uint8 tensor, in the order of a batch sampler of (index, seed) keys:
    `for images, labels in TensorBatches(data, labels, sampler, augment)`."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray | torch.Tensor, sampler: Iterable,
                 augment: TensorAugment):
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.sampler = sampler
        self.augment = augment

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for keys in self.sampler:
            index = torch.tensor([k for k, _ in keys], dtype=torch.long)
            draws = SampleDraws([mix_seed(seed, 0xA06) for _, seed in keys])  # each image's (seed, epoch, position)
            yield self.augment(self.images[index], draws), self.labels[index]


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """A batch resized to size x size (bilinear, antialiased when shrinking): progressive resolution."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


__all__ = ["stack_images", "TensorAugment", "TensorBatches", "resize_batch", "CROPS"]
