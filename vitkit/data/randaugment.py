"""RandAugment (Cubuk et al. 2020) as the papers that vitkit's recipes follow ran it. The name covers three
different augmentations, and a magnitude means nothing without its scale:

- "timm" (DeiT: `rand-m9-mstd0.5-inc1`): timm's `rand_augment_transform`. 15 operations, `num_ops` of them
  drawn with replacement, each applied with probability 0.5; the magnitude on a 0-10 scale (m9: rotations of up
  to 27 degrees), with Gaussian noise of std `magnitude_std` per operation, clipped to 0-10; `increasing` uses
  the variants whose strength grows with the magnitude (posterize, solarize, colour, contrast, brightness,
  sharpness). Empty pixels are filled with the mean colour; geometric operations resample with the training
  interpolation. Translations are a share of the image side (0.45 at m10).
- "big_vision" (AugReg: `randaug(2,15)`): big_vision's `pp/autoaugment.py`, the TPU EfficientNet code.
  16 operations (timm's 14 plain ones with absolute translations, plus Cutout), one drawn per layer, always
  applied; the magnitude divided by 10 and not clipped (m15: rotations of 45 degrees, shears of 0.45,
  translations of 150 px, cutout boxes of 120 px); empty pixels grey (128), nearest-neighbour resampling;
  its Contrast blends towards the constant (pixel count / 256), as the TensorFlow code does.
- "torchvision": torchvision's `RandAugment` (a magnitude of 0-30 in 31 bins: m9 rotates up to 9 degrees).

All draws come from torch's global generator, which `TransformedImages` seeds per image, so an image's
augmentation is a function of its key. The operations are PIL's, as in timm (and as the TensorFlow code
imitates).
"""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageEnhance, ImageOps

STYLES = ("timm", "big_vision", "torchvision")
TIMM_MAX = 10.0  # timm's magnitude scale: m / 10 is the share of each operation's range

TIMM_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
TIMM_INCREASING = {"Posterize": "PosterizeIncreasing", "Solarize": "SolarizeIncreasing", "Color": "ColorIncreasing",
                   "Contrast": "ContrastIncreasing", "Brightness": "BrightnessIncreasing",
                   "Sharpness": "SharpnessIncreasing"}
BIG_VISION_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
                  "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")
BIG_VISION_TRANSLATE = 100  # pixels at magnitude 10 (big_vision's HParams(translate_const=100))
BIG_VISION_CUTOUT = 40  # half the cutout side at magnitude 10 (cutout_const=40)


def _uniform() -> float:
    return float(torch.rand(()))


def _signed(value: float) -> float:
    """The value, negated with probability 1/2."""
    return -value if _uniform() < 0.5 else value


# ------------------------------------------------------------------------------- strengths of magnitude m
def op_argument(name: str, m: float, style: str, image_size: tuple[int, int] = (224, 224)) -> float:
    """The unsigned strength of an operation at magnitude `m` in a style (degrees, shear factor, pixels, bits,
    threshold, enhancement factor); `m` on the style's own scale. Random signs are added by the caller."""
    level = m / TIMM_MAX  # both styles divide by 10; timm clips m to 0-10 first, big_vision does not
    if name == "Rotate":
        return level * 30.0
    if name in ("ShearX", "ShearY"):
        return level * 0.3
    if name in ("TranslateXRel", "TranslateYRel"):  # timm: a share of the side
        side = image_size[0] if name == "TranslateXRel" else image_size[1]
        return level * 0.45 * side
    if name in ("TranslateX", "TranslateY"):  # big_vision: absolute pixels
        return level * BIG_VISION_TRANSLATE
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return level * 1.8 + 0.1
    if name.endswith("Increasing") and name[:-len("Increasing")] in ("Color", "Contrast", "Brightness",
                                                                      "Sharpness"):
        return level * 0.9  # the distance from 1 (no change); signed by the caller
    if name == "Posterize":
        return int(level * 4)  # bits kept: a higher magnitude keeps more (TensorFlow's scaling, kept by timm)
    if name == "PosterizeIncreasing":
        return 4 - int(level * 4)
    if name == "Solarize":
        return min(256, int(level * 256)) if style == "timm" else int(level * 256)
    if name == "SolarizeIncreasing":
        return 256 - min(256, int(level * 256))
    if name == "SolarizeAdd":
        return min(128, int(level * 110)) if style == "timm" else int(level * 110)
    if name == "Cutout":
        return int(level * BIG_VISION_CUTOUT)
    return 0.0  # AutoContrast, Equalize, Invert


# ------------------------------------------------------------------------------------------ the operations
def _affine(img: Image.Image, matrix, fill, resample) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def _solarize_add(img: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    lut = [min(255, i + add) if i < threshold else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _posterize(img: Image.Image, bits: int) -> Image.Image:
    return img if bits >= 8 else ImageOps.posterize(img, max(bits, 0))


def _tf_contrast(img: Image.Image, factor: float) -> Image.Image:
    """big_vision's (TensorFlow's) Contrast: a blend with a constant grey of (pixel count / 256), clipped."""
    import numpy as np

    array = np.asarray(img, dtype=np.float32)
    grey = min(array.shape[0] * array.shape[1] / 256.0, 255.0)
    degenerate = np.float32(int(grey))
    out = degenerate + factor * (array - degenerate)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _cutout(img: Image.Image, pad: int, fill) -> Image.Image:
    width, height = img.size
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    out = img.copy()
    box = (max(0, cx - pad), max(0, cy - pad), min(width, cx + pad), min(height, cy + pad))
    if box[2] > box[0] and box[3] > box[1]:
        out.paste(tuple(fill), box)
    return out


def apply_op(img: Image.Image, name: str, value: float, fill, resample, style: str = "timm") -> Image.Image:
    """One operation with its signed argument (`op_argument`, negated where the op is symmetric)."""
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Rotate":
        return img.rotate(value, resample=resample, fillcolor=fill)
    if name == "ShearX":
        return _affine(img, (1, value, 0, 0, 1, 0), fill, resample)
    if name == "ShearY":
        return _affine(img, (1, 0, 0, value, 1, 0), fill, resample)
    if name in ("TranslateX", "TranslateXRel"):
        return _affine(img, (1, 0, value, 0, 1, 0), fill, resample)
    if name in ("TranslateY", "TranslateYRel"):
        return _affine(img, (1, 0, 0, 0, 1, value), fill, resample)
    if name.startswith("Posterize"):
        return _posterize(img, int(value))
    if name.startswith("SolarizeAdd"):
        return _solarize_add(img, int(value))
    if name.startswith("Solarize"):
        return ImageOps.solarize(img, int(value))
    if name == "Contrast" and style == "big_vision":
        return _tf_contrast(img, value)
    enhancers = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
                 "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}
    base = name[:-len("Increasing")] if name.endswith("Increasing") else name
    if base in enhancers:
        return enhancers[base](img).enhance(value)
    if name == "Cutout":
        return _cutout(img, int(value), fill)
    raise ValueError(f"unknown RandAugment operation {name!r}")


SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel"}


class RandAugment:
    """A PIL image -> a PIL image, as timm or big_vision augment it (see the module's docstring)."""

    def __init__(self, num_ops: int = 2, magnitude: float = 9, style: str = "timm", magnitude_std: float = 0.0,
                 increasing: bool = False, fill=(128, 128, 128), resample=Image.BICUBIC):
        if style not in ("timm", "big_vision"):
            raise ValueError(f"RandAugment style {style!r}: expected timm or big_vision (torchvision's is "
                             "torchvision.transforms.v2.RandAugment)")
        self.num_ops = num_ops
        self.magnitude = float(magnitude)
        self.style = style
        self.magnitude_std = magnitude_std
        if style == "timm":
            self.ops = tuple(TIMM_INCREASING.get(op, op) for op in TIMM_OPS) if increasing else TIMM_OPS
            self.fill = tuple(int(v) for v in fill)
            self.resample = resample
        else:
            self.ops = BIG_VISION_OPS
            self.fill = (128, 128, 128)
            self.resample = Image.NEAREST

    def _magnitude(self) -> float:
        m = self.magnitude
        if self.style != "timm":
            return m
        if self.magnitude_std == math.inf:
            m = _uniform() * m
        elif self.magnitude_std > 0:
            m = m + self.magnitude_std * float(torch.randn(()))
        return max(0.0, min(m, TIMM_MAX))

    def __call__(self, img: Image.Image) -> Image.Image:
        for _ in range(self.num_ops):
            name = self.ops[int(torch.randint(len(self.ops), ()))]
            if self.style == "timm" and _uniform() >= 0.5:  # timm applies each chosen op with probability 0.5
                continue
            value = op_argument(name, self._magnitude(), self.style, img.size)
            if name in SIGNED or name.endswith("Increasing") and not name.startswith(("Posterize", "Solarize")):
                value = _signed(value)
                if name.endswith("Increasing"):
                    value = max(0.1, 1.0 + value)
            img = apply_op(img, name, value, self.fill, self.resample, self.style)
        return img

    def __repr__(self) -> str:
        extra = f", mstd={self.magnitude_std}" if self.style == "timm" else ""
        return f"{type(self).__name__}(style={self.style}, n={self.num_ops}, m={self.magnitude:g}{extra})"


__all__ = ["RandAugment", "STYLES", "op_argument", "apply_op"]
