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


# ------------------------------------------------------------------------------------------------ RandAugment
from timm.data import auto_augment as timm_aa  # noqa: E402  (the reference; timm is a test dependency)

from vitkit.data.randaugment import RandAugment, apply_op, op_argument  # noqa: E402


def photo(size: int = 40, seed: int = 0) -> Image.Image:
    """A smooth colour image with some structure (gradients and a square), so that every op changes it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    array = np.stack([x * 255 / size, y * 255 / size, (x + y) * 127 / size], axis=-1)
    array[size // 4: size // 2, size // 4: size // 2] = [250, 30, 60]
    array += rng.normal(0, 8, array.shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


HPARAMS = dict(translate_const=18, img_mean=(124, 116, 104), interpolation=Image.BICUBIC)


def test_timm_style_strengths_are_timms():
    # DeiT's rand-m9-mstd0.5-inc1: m9 on timm's 0-10 scale rotates by 27 degrees (torchvision's m9: 9 degrees)
    assert op_argument("Rotate", 9, "timm") == pytest.approx(abs(timm_aa._rotate_level_to_arg(9, HPARAMS)[0]))
    assert op_argument("Rotate", 9, "timm") == pytest.approx(27.0)
    assert op_argument("ShearX", 9, "timm") == pytest.approx(abs(timm_aa._shear_level_to_arg(9, HPARAMS)[0]))
    assert op_argument("TranslateXRel", 9, "timm", (40, 40)) == pytest.approx(
        abs(timm_aa._translate_rel_level_to_arg(9, HPARAMS)[0]) * 40)
    for name in ("Posterize", "PosterizeIncreasing", "Solarize", "SolarizeIncreasing", "SolarizeAdd", "Color"):
        for m in (0, 3, 9, 10):
            assert op_argument(name, m, "timm") == pytest.approx(timm_aa.LEVEL_TO_ARG[name](m, HPARAMS)[0]), (name, m)


@pytest.mark.parametrize("name", ["AutoContrast", "Equalize", "Invert", "PosterizeIncreasing", "SolarizeIncreasing",
                                  "SolarizeAdd", "Posterize", "Solarize", "Color", "Contrast", "Brightness",
                                  "Sharpness"])
def test_timm_style_deterministic_ops_give_timms_pixels(name):
    image = photo()
    theirs = timm_aa.AugmentOp(name, prob=1.0, magnitude=9, hparams=HPARAMS)(image)
    ours = apply_op(image, name, op_argument(name, 9, "timm"), HPARAMS["img_mean"], Image.BICUBIC)
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"])
def test_timm_style_geometric_ops_give_timms_pixels_for_either_sign(name):
    image = photo()
    value = op_argument(name, 9, "timm", image.size)
    ours = {sign: np.asarray(apply_op(image, name, sign * value, HPARAMS["img_mean"], Image.BICUBIC))
            for sign in (1, -1)}
    for seed in range(6):  # timm negates at random: its output must be ours with one of the two signs
        timm_aa.random.seed(seed)
        theirs = np.asarray(timm_aa.AugmentOp(name, prob=1.0, magnitude=9, hparams=HPARAMS)(image))
        assert any(np.array_equal(theirs, o) for o in ours.values())


def test_big_vision_style_reads_magnitude_15_on_its_own_scale():
    # AugReg's randaug(2, 15): level 15 / 10, not clipped (big_vision/pp/autoaugment.py, _MAX_LEVEL = 10)
    assert op_argument("Rotate", 15, "big_vision") == pytest.approx(45.0)
    assert op_argument("ShearX", 15, "big_vision") == pytest.approx(0.45)
    assert op_argument("TranslateX", 15, "big_vision") == pytest.approx(150.0)
    assert op_argument("Cutout", 15, "big_vision") == 60
    assert op_argument("Color", 15, "big_vision") == pytest.approx(2.8)
    assert op_argument("Posterize", 15, "big_vision") == 6
    augment = RandAugment(2, 15, "big_vision")
    assert len(augment.ops) == 16 and "Cutout" in augment.ops and augment.fill == (128, 128, 128)


def test_timm_style_magnitude_noise_and_the_probability_of_each_op():
    augment = RandAugment(1, 9, "timm", magnitude_std=0.5, increasing=True)
    torch.manual_seed(0)
    draws = [augment._magnitude() for _ in range(4000)]
    assert np.mean(draws) == pytest.approx(9.0, abs=0.05) and np.std(draws) == pytest.approx(0.5, abs=0.05)
    assert max(draws) <= 10.0
    assert "PosterizeIncreasing" in augment.ops and "Posterize" not in augment.ops
    image = photo()
    unchanged = sum(np.array_equal(np.asarray(augment(image)), np.asarray(image)) for _ in range(400))
    assert 0.4 < unchanged / 400 < 0.6  # each chosen op is skipped with probability 0.5, as in timm


def test_the_recipe_options_reach_the_pil_pipeline_and_the_tensor_pipeline_refuses_them():
    transform = train_transform(Preprocessing(image_size=16), randaugment_ops=2, randaugment_magnitude=9,
                                randaugment_style="timm", randaugment_magnitude_std=0.5, randaugment_increasing=True)
    found = [t for t in transform.transforms if isinstance(t, RandAugment)]
    assert len(found) == 1 and found[0].magnitude_std == 0.5 and found[0].fill == (128, 128, 128)
    with pytest.raises(Exception, match="pipeline='pil'"):
        TrainConfig(randaugment_ops=2, pipeline="tensor").validate()
    with pytest.raises(Exception, match="timm's scale"):
        TrainConfig(randaugment_ops=2, randaugment_style="timm", randaugment_magnitude=15).validate()
    with pytest.raises(Exception, match="randaugment_style"):
        TrainConfig(randaugment_style="tf").validate()


# --------------------------------------------------------------------------------------- repeated augmentation
from vitkit.data.loader import StepBatchSampler  # noqa: E402


def global_batches(num_items, batch, accum, world, repeats, steps):
    """Each step's global batch, put together from every rank's micro-batches."""
    ranks = [list(StepBatchSampler(num_items, batch, accum, world, r, seed=4, start_step=0, end_step=steps,
                                   repeats=repeats)) for r in range(world)]
    return [[key for a in range(accum) for r in range(world) for key in ranks[r][s * accum + a]]
            for s in range(steps)]


def test_repeated_augmentation_puts_each_image_three_times_in_a_batch_with_its_own_seeds():
    single = global_batches(60, 12, 1, 1, 3, steps=10)  # 5 steps per epoch, 4 images per step
    for keys in single:
        images = [k[0] for k in keys]
        assert len(set(images)) == 4 and all(images.count(i) == 3 for i in set(images))
        assert len({k[1] for k in keys}) == 12  # every copy has its own augmentation
        assert images[0] == images[4] == images[8] and images[0] != images[1]  # copies spread, neighbours differ
    epoch = [k[0] for keys in single[:5] for k in keys]
    assert len(set(epoch)) == 20  # an epoch: 5 steps of 12, a third of the 60 images, three times each
    assert global_batches(60, 12, 2, 2, 3, steps=10) == single  # any accumulation and world size: the same
    assert global_batches(60, 12, 1, 1, 1, steps=5) != single
    uneven = global_batches(60, 10, 1, 1, 3, steps=6)  # DeiT's 1024 / 3: whole triples but at the batch ends
    images = [k[0] for keys in uneven for k in keys]
    assert all(images.count(i) == 3 for i in set(images)) and len(set(images)) == 20
    assert [len(set(k[0] for k in keys)) for keys in uneven[:3]] == [4, 4, 4]  # 0-3 (one copy of 3), 3-6, 6-9
    assert all(keys[i][0] != keys[i ^ 1][0] for keys in uneven for i in range(10))  # no image mixed with itself
    assert global_batches(60, 10, 1, 2, 3, steps=6) == uneven
