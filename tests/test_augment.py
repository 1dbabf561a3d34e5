"""Augmentation ops against their references: random erasing's box (timm's defaults), RandAugment's strengths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.configs import Preprocessing
from vitkit.data.erasing import erase_boxes
from vitkit.data.loader import TransformedImages
from vitkit.data.memory import TensorAugment
from vitkit.data.transforms import train_transform
from vitkit.training.config import TrainConfig


def boxes(changed: torch.Tensor) -> list[tuple[int, int]]:
    """(height, width) of the one rectangle of True in each (H, W) mask."""
    out = []
    for mask in changed:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        assert len(rows) and len(cols)
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert mask.sum() == h * w  # exactly one filled rectangle
        out.append((h, w))
    return out


def test_random_erasing_boxes_cover_2_to_33_percent_with_timms_aspects():
    size, n = 64, 2000
    x = torch.full((n, 3, size, size), 7.0)  # far from any N(0, 1) noise value
    erased = erase_boxes(x, 1.0, torch.Generator().manual_seed(0))
    changed = (erased != x).any(dim=1)
    assert changed.any(dim=(1, 2)).float().mean() > 0.99  # nearly every box fits within 10 attempts
    hw = boxes(changed[changed.any(dim=(1, 2))])
    areas = np.array([h * w for h, w in hw]) / size**2
    aspects = np.array([h / w for h, w in hw])
    assert areas.min() >= 0.02 * 0.85 and areas.max() <= 1 / 3 * 1.15  # rounding of the sides only
    assert areas.max() > 0.3  # the upper bound is timm's 1/3, not 1/4
    assert np.quantile(areas, 0.5) == pytest.approx((0.02 + 1 / 3) / 2, abs=0.03)
    assert aspects.min() >= 0.3 * 0.8 and aspects.max() <= 1 / 0.3 * 1.25
    assert aspects.min() < 0.4 and aspects.max() > 2.5


def test_random_erasing_probability_is_the_share_of_images_erased():
    x = torch.zeros((4000, 3, 16, 16))
    changed = (erase_boxes(x, 0.25, torch.Generator().manual_seed(1)) != 0).flatten(1).any(dim=1)
    assert changed.float().mean().item() == pytest.approx(0.25, abs=0.03)


def test_the_tensor_pipeline_erases_with_the_same_rule():
    x = torch.full((300, 3, 32, 32), 128, dtype=torch.uint8)
    plain = TensorAugment([0.0] * 3, [1.0] * 3, crop="resize", hflip=False)(x, torch.Generator().manual_seed(2))
    erased = TensorAugment([0.0] * 3, [1.0] * 3, crop="resize", hflip=False, random_erasing=1.0)(
        x, torch.Generator().manual_seed(2))
    areas = np.array([h * w for h, w in boxes((erased != plain).any(dim=1))]) / 32**2
    assert areas.max() > 0.28 and areas.max() <= 1 / 3 * 1.2 and areas.min() >= 0.015


def test_the_pil_pipeline_erases_too_and_reproducibly(tmp_path):
    image = Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8))
    transform = train_transform(Preprocessing(image_size=32), crop="resize", hflip=False, random_erasing=1.0)
    clean = train_transform(Preprocessing(image_size=32), crop="resize", hflip=False)(image)

    class One:
        labels = np.array([0])

        def load(self, index):
            return image

        def __len__(self):
            return 1

    data = TransformedImages(One(), transform)
    a, b, c = data[(0, 5)][0], data[(0, 5)][0], data[(0, 6)][0]
    assert torch.equal(a, b) and not torch.equal(a, c)  # a function of the image's key
    for out in (a, c):
        (h, w), = boxes((out != clean).any(dim=0)[None])
        assert 0.015 <= h * w / 32**2 <= 1 / 3 * 1.2
    assert TrainConfig(random_erasing=0.25, pipeline="pil").validate().random_erasing == 0.25
