"""Image files -> the tensors a model expects, as `model.preprocessing` says (size, crop, mean, std), and the
resized pixels to draw maps over; and finding the images of a folder."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..configs import Preprocessing
from ..errors import UsageError


def load_images(paths: Sequence[str | os.PathLike], model) -> tuple[torch.Tensor, np.ndarray]:
    """Files -> (preprocessed batch (B, 3, H, W) for `model`, the same pixels as uint8 (B, H, W, 3) to draw on).

    Preprocessing is the evaluation transform of `vitkit.data` (resize, or resize and centre-crop for crop_pct < 1,
    then the checkpoint's mean and std), so the maps describe exactly what `vitkit eval` and `predict` see. Every
    file must be readable (commands skip unreadable ones first, with `vitkit.data.read_images`).
    """
    from ..data.datasets import read_image

    if not paths:
        raise UsageError("no images given")
    images = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        try:
            images.append(read_image(path))
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read image {path}: {e}") from None
    return prepare_images(images, model)


def prepare_images(images: Sequence, model) -> tuple[torch.Tensor, np.ndarray]:
    """Decoded RGB PIL images -> (preprocessed batch (B, 3, H, W) for `model`, its pixels as uint8 (B, H, W, 3))."""
    from ..data.transforms import eval_transform

    if not images:
        raise UsageError("no images given")
    if model.config.in_channels != 3:
        raise UsageError(f"the model takes {model.config.in_channels}-channel input; image files are read as RGB")
    transform = eval_transform(model.preprocessing)
    batch = torch.stack([transform(image) for image in images])  # (B, 3, H, W)
    return batch, to_pixels(batch, model.preprocessing)


def to_pixels(batch: torch.Tensor, preprocessing: Preprocessing) -> np.ndarray:
    """Undo the normalisation: (B, C, H, W) -> uint8 (B, H, W, C)."""
    channels = batch.shape[1]
    mean = torch.tensor(preprocessing.mean[:channels]).view(1, channels, 1, 1)
    std = torch.tensor(preprocessing.std[:channels]).view(1, channels, 1, 1)
    pixels = (batch * std + mean).clamp(0, 1) * 255.0
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def find_images(folder: str | os.PathLike, limit: int | None = None, seed: int = 0,
                log=lambda message: None) -> list[Path]:
    """Image files under `folder` (recursively, as an ImageFolder tree or flat; other files ignored and reported to
    `log`); a random sample of `limit` of them (fixed by `seed`) when there are more."""
    from ..data.datasets import gather_image_files

    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"data folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    files = [Path(p) for p in gather_image_files([folder], log=log)]
    if limit is not None and len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    return files


def image_batches(paths: Sequence[Path], model, batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Preprocessed batches of the files, read one batch at a time."""
    for start in range(0, len(paths), batch_size):
        yield load_images(paths[start:start + batch_size], model)[0]
