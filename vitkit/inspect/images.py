"""Image files -> the tensors a model expects, as `model.preprocessing` says (size, crop, mean, std), and the
resized pixels to draw maps over."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..configs import Preprocessing
from ..errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def _resample(name: str):
    from PIL import Image

    methods = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
               "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
    return methods.get(name, Image.Resampling.BILINEAR)


def read_image(path: str | os.PathLike, preprocessing: Preprocessing, channels: int = 3) -> np.ndarray:
    """One file resized (and centre-cropped if crop_pct < 1) to the model's size: uint8 (H, W, channels)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            height, width = preprocessing.image_size
            crop = preprocessing.crop_pct or 1.0
            scaled = (max(round(height / crop), height), max(round(width / crop), width))
            image = image.resize((scaled[1], scaled[0]), _resample(preprocessing.interpolation))
            top, left = (scaled[0] - height) // 2, (scaled[1] - width) // 2
            image = image.crop((left, top, left + width, top + height))
            pixels = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(f"cannot read image {path}: {e}") from None
    return pixels[..., None] if pixels.ndim == 2 else pixels


def to_tensor(pixels: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 (B, H, W, C) or (H, W, C) -> float (B, C, H, W) or (C, H, W), scaled to [0, 1] then normalised."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).float() / 255.0
    x = x.movedim(-1, -3)  # channels first
    channels = x.shape[-3]
    mean = torch.tensor(preprocessing.mean[:channels]).view(channels, 1, 1)
    std = torch.tensor(preprocessing.std[:channels]).view(channels, 1, 1)
    return (x - mean) / std


def load_images(paths: Sequence[str | os.PathLike], model) -> tuple[torch.Tensor, np.ndarray]:
    """Files -> (preprocessed batch (B, C, H, W) for `model`, the resized pixels uint8 (B, H, W, C))."""
    if not paths:
        raise UsageError("no images given")
    channels = model.config.in_channels
    if channels not in (1, 3):
        raise UsageError(f"the model takes {channels}-channel input; image files give 1 or 3 channels")
    pixels = np.stack([read_image(p, model.preprocessing, channels) for p in paths])
    return to_tensor(pixels, model.preprocessing), pixels


def find_images(folder: str | os.PathLike, limit: int | None = None, seed: int = 0) -> list[Path]:
    """Image files under `folder` (recursively, as an ImageFolder tree or flat); a random sample of `limit` of them
    (fixed by `seed`) when there are more."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"data folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UsageError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    if limit is not None and len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    return files


def image_batches(paths: Sequence[Path], model, batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Preprocessed batches of the files, read one batch at a time."""
    for start in range(0, len(paths), batch_size):
        yield load_images(paths[start:start + batch_size], model)[0]
