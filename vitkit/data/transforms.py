"""Image transforms, through torchvision's `transforms.v2`: the training augmentations and the evaluation
preprocessing that a checkpoint's `Preprocessing` describes."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from ..configs import Preprocessing
from .erasing import RandomErasing
from .randaugment import RandAugment

INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
                  "nearest": InterpolationMode.NEAREST}


PIL_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def interpolation_mode(name: str) -> InterpolationMode:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; expected one of {', '.join(INTERPOLATIONS)}") from None


class ToNormalizedTensor:
    """PIL image -> (C, H, W) float32, (x / 255 - mean) / std: ToImage, ToDtype and Normalize in one step
    (a fifth of their time, which counts for small images)."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image) -> torch.Tensor:
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        x = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
        return x.sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def _to_tensor(mean, std) -> list:
    return [ToNormalizedTensor(mean, std)]


class ResizeCrop:
    """Resize as `Preprocessing` says, then take the central image_size crop: timm's `transforms_imagenet_eval` and
    Hugging Face's resize + center_crop, with their exact size and offset roundings, on PIL images as theirs."""

    def __init__(self, preprocessing: Preprocessing):
        p = preprocessing
        self.mode, self.target, self.size = p.resize_mode, p.resize_target(), p.image_size
        self.interpolation, self.floor = interpolation_mode(p.interpolation), p.crop_offset == "floor"

    def resized(self, height: int, width: int) -> tuple[int, int]:
        (th, tw) = self.target
        if self.mode == "squash":
            return th, tw
        if th == tw:  # torchvision's Resize(int), as timm and Hugging Face's shortest_edge: the long side truncated
            return (th, int(th * width / height)) if height <= width else (int(th * height / width), th)
        ratio = min(height / th, width / tw)  # timm's ResizeKeepRatio for a non-square target: both sides rounded
        return round(height / ratio), round(width / ratio)

    def __call__(self, image):
        height, width = v2.functional.get_size(image)
        new = self.resized(height, width)
        if new != (height, width):
            image = v2.functional.resize(image, list(new), interpolation=self.interpolation, antialias=True)
        (h, w), (ch, cw) = new, self.size
        offset = (lambda margin: margin // 2) if self.floor else (lambda margin: int(round(margin / 2.0)))
        return v2.functional.crop(image, offset(h - ch), offset(w - cw), ch, cw)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mode={self.mode!r}, target={self.target}, crop={self.size}, "
                f"interpolation={self.interpolation.value}, crop_offset={'floor' if self.floor else 'round'})")


def eval_transform(preprocessing: Preprocessing) -> v2.Compose:
    """PIL image -> normalised (3, H, W) tensor, as the model expects: `ResizeCrop`, then mean and std.

    Squash at crop_pct 1 is the original code's way and Hugging Face's ViT; timm keeps the aspect ratio (shorter).
    """
    p = preprocessing
    return v2.Compose([ResizeCrop(p)] + _to_tensor(p.mean, p.std))


def train_transform(preprocessing: Preprocessing, *, crop: str = "inception", crop_min_area: float = 0.05,
                    crop_padding: int = 4, hflip: bool = True, randaugment_ops: int = 0,
                    randaugment_magnitude: int = 9, random_erasing: float = 0.0,
                    randaugment_style: str = "torchvision", randaugment_magnitude_std: float = 0.0,
                    randaugment_increasing: bool = False) -> v2.Compose:
    """The training augmentation: a crop (the Inception crop: a random area of 5-100% and aspect 3/4-4/3,
    resized), horizontal flips, RandAugment, the model's normalisation, then random erasing."""
    p = preprocessing
    size = tuple(p.image_size)
    mode = interpolation_mode(p.interpolation)
    if crop == "inception":
        ops = [v2.RandomResizedCrop(size, scale=(crop_min_area, 1.0), interpolation=mode, antialias=True)]
    elif crop == "resize":
        ops = [v2.Resize(size, interpolation=mode, antialias=True)]
    elif crop == "pad_crop":
        ops = [v2.Resize(size, interpolation=mode, antialias=True),
               v2.RandomCrop(size, padding=crop_padding, padding_mode="reflect")]
    else:
        raise ValueError(f"unknown crop {crop!r}; expected inception, resize or pad_crop")
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if randaugment_ops > 0 and randaugment_style == "torchvision":
        ops.append(v2.RandAugment(num_ops=randaugment_ops, magnitude=randaugment_magnitude, interpolation=mode))
    elif randaugment_ops > 0:  # the papers' RandAugment, on their own magnitude scales (data/randaugment.py)
        fill = tuple(min(255, round(255 * m)) for m in p.mean)  # timm: the mean colour; big_vision: grey
        ops.append(RandAugment(randaugment_ops, randaugment_magnitude, randaugment_style, randaugment_magnitude_std,
                               randaugment_increasing, fill=fill, resample=PIL_RESAMPLE[p.interpolation]))
    erase = [RandomErasing(random_erasing)] if random_erasing > 0 else []
    return v2.Compose(ops + _to_tensor(p.mean, p.std) + erase)
