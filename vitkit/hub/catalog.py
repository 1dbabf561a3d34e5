"""The catalog of published checkpoints of the paper's models, by short stable name.

One table (`CATALOG`) like the variant table in `vitkit/configs.py`: every entry says where the file comes from,
its format, the variant, resolution and classes, the preprocessing its authors used, the top-1 they report (and on
what), the data behind it, the licence and the hash where the source publishes one. Facts come from the sources
themselves: the original repository's README (google-research/vision_transformer), torchvision's weight enums,
timm's pretrained configs, the DeiT repository's README; where a source states no accuracy, `top1` is None.

Names (lower case, `-` between words):
  vit-b16-in21k, vit-b16-in21k-ft-in1k-384       the original release (gs://vit_models/imagenet21k*/)
  augreg-vit-b16-in21k[-ft-in1k-384]              "How to train your ViT" recommended set (gs://vit_models/augreg/)
  tv-vit-b16-in1k, tv-vit-b16-swag-e2e-384        torchvision's ViT_*_Weights (download.pytorch.org)
  hf-google-vit-base-patch16-224, hf-facebook-deit-base-patch16-224   Hugging Face repositories, named after the repo
  timm-vit_base_patch16_224.augreg2_in21k_ft_in1k timm's hub names (hf-hub:timm/...), "timm-" + timm's own name
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..configs import Preprocessing

SOURCES = ("vit_jax", "augreg", "torchvision", "hf", "timm")
FORMATS = ("google-npz", "torchvision-pth", "hf-folder", "timm-hub")
CLASS_LISTS = {"imagenet-1k": 1000, "imagenet-21k": 21843}

GCS = "gs://vit_models"
TV = "https://download.pytorch.org/models"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

VIT_JAX_README = "https://github.com/google-research/vision_transformer#available-vit-models"
DEIT_README = "https://github.com/facebookresearch/deit/blob/main/README_deit.md"
SWAG_LICENSE = "https://github.com/facebookresearch/SWAG/blob/main/LICENSE"


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """One published checkpoint: where it is, what it is, how to feed it, and what its authors report."""

    name: str  # short stable name, `vitkit.load(name)`
    source: str  # one of SOURCES
    uri: str  # gs://..., https://... or hf-hub:ORG/REPO
    format: str  # one of FORMATS
    variant: str  # vitkit's variant name: "ViT-B/16", "R50+ViT-B/16", ...
    image_size: int  # resolution the file's position embeddings are laid out for
    num_classes: int  # outputs of the file's head; 0 when the file has none
    class_names: str | None  # "imagenet-1k", "imagenet-21k" (package data files), or None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # "bilinear" or "bicubic"
    crop_pct: float  # 1.0: resize to the size; < 1: resize to size / crop_pct, centre crop
    top1: float | None  # percent, as the authors report it
    top1_data: str | None  # what top1 was measured on
    pretrain_data: str
    finetune_data: str | None
    license: str
    sha256: str | None = None  # full SHA-256 of the file, where the source publishes one
    sha256_prefix: str | None = None  # torchvision names its files with the first hex digits of their SHA-256
    hf_hub_id: str | None = None  # the Hugging Face repository (timm's and Hugging Face's entries)
    timm_name: str | None = None  # timm's `model.tag` for the same file, where timm points at it
    distilled: bool = False  # DeiT's distillation token and second head
    reference: str = ""  # where the facts of this entry come from
    notes: str = ""

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(image_size=self.image_size, mean=self.mean, std=self.std,
                             interpolation=self.interpolation, crop_pct=self.crop_pct)

    @property
    def data(self) -> str:
        """"ImageNet-21k -> ImageNet-1k", for tables."""
        return self.pretrain_data + (f" -> {self.finetune_data}" if self.finetune_data else "")


# ------------------------------------------------------------------------------------------- the original release
def _vit_jax(name, folder, file, variant, size, top1=None, notes=""):
    finetuned = folder == "imagenet21k+imagenet2012"
    return PretrainedCheckpoint(
        name=name, source="vit_jax", uri=f"{GCS}/{folder}/{file}", format="google-npz", variant=variant,
        image_size=size, num_classes=1000 if finetuned else 21843,
        class_names="imagenet-1k" if finetuned else "imagenet-21k", mean=HALF, std=HALF, interpolation="bilinear",
        crop_pct=1.0, top1=top1, top1_data="ImageNet-1k val" if top1 is not None else None,
        pretrain_data="ImageNet-21k", finetune_data="ImageNet-1k" if finetuned else None, license="Apache-2.0",
        reference=VIT_JAX_README, notes=notes)


_EXPECTED_224 = "the README: 'expected to achieve' this top-1"
_ORIGINAL = [
    _vit_jax("vit-b16-in21k", "imagenet21k", "ViT-B_16.npz", "ViT-B/16", 224),
    _vit_jax("vit-b32-in21k", "imagenet21k", "ViT-B_32.npz", "ViT-B/32", 224),
    _vit_jax("vit-l16-in21k", "imagenet21k", "ViT-L_16.npz", "ViT-L/16", 224),
    _vit_jax("vit-l32-in21k", "imagenet21k", "ViT-L_32.npz", "ViT-L/32", 224),
    _vit_jax("vit-h14-in21k", "imagenet21k", "ViT-H_14.npz", "ViT-H/14", 224),
    _vit_jax("r50-vit-b16-in21k", "imagenet21k", "R50+ViT-B_16.npz", "R50+ViT-B/16", 224),
    _vit_jax("vit-b16-in21k-ft-in1k-384", "imagenet21k+imagenet2012", "ViT-B_16.npz", "ViT-B/16", 384),
    _vit_jax("vit-b16-in21k-ft-in1k-224", "imagenet21k+imagenet2012", "ViT-B_16-224.npz", "ViT-B/16", 224, 81.2,
             _EXPECTED_224),
    _vit_jax("vit-b32-in21k-ft-in1k-384", "imagenet21k+imagenet2012", "ViT-B_32.npz", "ViT-B/32", 384),
    _vit_jax("vit-l16-in21k-ft-in1k-384", "imagenet21k+imagenet2012", "ViT-L_16.npz", "ViT-L/16", 384),
    _vit_jax("vit-l16-in21k-ft-in1k-224", "imagenet21k+imagenet2012", "ViT-L_16-224.npz", "ViT-L/16", 224, 82.7,
             _EXPECTED_224),
    _vit_jax("vit-l32-in21k-ft-in1k-384", "imagenet21k+imagenet2012", "ViT-L_32.npz", "ViT-L/32", 384),
    _vit_jax("r50-vit-b16-in21k-ft-in1k-384", "imagenet21k+imagenet2012", "R50+ViT-B_16.npz", "R50+ViT-B/16", 384),
]


# ------------------------------------------------------------- "How to train your ViT?" (AugReg), the recommended set
def _augreg(short, variant, pretrained, finetuned, top1, timm_pre=None, timm_ft=None):
    """The pair of the README's recommended table: the ImageNet-21k checkpoint and its ImageNet-1k fine-tune."""
    common = dict(source="augreg", format="google-npz", variant=variant, mean=HALF, std=HALF,
                  interpolation="bilinear", crop_pct=1.0, pretrain_data="ImageNet-21k", license="Apache-2.0",
                  reference=VIT_JAX_README)
    return [
        PretrainedCheckpoint(name=f"augreg-{short}-in21k", uri=f"{GCS}/augreg/{pretrained}.npz", image_size=224,
                             num_classes=21843, class_names="imagenet-21k", top1=None, top1_data=None,
                             finetune_data=None, timm_name=timm_pre, **common),
        PretrainedCheckpoint(name=f"augreg-{short}-in21k-ft-in1k-384",
                             uri=f"{GCS}/augreg/{pretrained}--{finetuned}.npz", image_size=384, num_classes=1000,
                             class_names="imagenet-1k", top1=top1, top1_data="ImageNet-1k val",
                             finetune_data="ImageNet-1k", timm_name=timm_ft, **common),
    ]


_AUGREG = [
    *_augreg("vit-l16", "ViT-L/16", "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0",
             "imagenet2012-steps_20k-lr_0.01-res_384", 85.59),
    *_augreg("vit-b16", "ViT-B/16", "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0",
             "imagenet2012-steps_20k-lr_0.03-res_384", 85.49, timm_pre="vit_base_patch16_224.augreg_in21k"),
    *_augreg("vit-s16", "ViT-S/16", "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0",
             "imagenet2012-steps_20k-lr_0.03-res_384", 83.73, timm_pre="vit_small_patch16_224.augreg_in21k",
             timm_ft="vit_small_patch16_384.augreg_in21k_ft_in1k"),
    *_augreg("r50-vit-l32", "R50+ViT-L/32", "R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1",
             "imagenet2012-steps_20k-lr_0.01-res_384", 85.99),
    *_augreg("r26-vit-s32", "R26+ViT-S/32", "R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
             "imagenet2012-steps_20k-lr_0.01-res_384", 83.85),
    *_augreg("vit-ti16", "ViT-Ti/16", "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
             "imagenet2012-steps_20k-lr_0.03-res_384", 78.22, timm_pre="vit_tiny_patch16_224.augreg_in21k",
             timm_ft="vit_tiny_patch16_384.augreg_in21k_ft_in1k"),
    *_augreg("vit-b32", "ViT-B/32", "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
             "imagenet2012-steps_20k-lr_0.01-res_384", 83.59),
    *_augreg("vit-s32", "ViT-S/32", "S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0",
             "imagenet2012-steps_20k-lr_0.01-res_384", 79.58),
    *_augreg("r-vit-ti16", "R+ViT-Ti/16", "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
             "imagenet2012-steps_20k-lr_0.03-res_384", 75.40, timm_pre="vit_tiny_r_s16_p8_224.augreg_in21k",
             timm_ft="vit_tiny_r_s16_p8_384.augreg_in21k_ft_in1k"),
]


# ------------------------------------------------------------------------------------------------------- torchvision
def _tv(name, enum, variant, file, size, resize, interpolation, top1, swag=None):
    """torchvision's weights: URL, hash prefix, accuracy and transforms as `torchvision.models.<enum>` states."""
    return PretrainedCheckpoint(
        name=name, source="torchvision", uri=f"{TV}/{file}", format="torchvision-pth", variant=variant,
        image_size=size, num_classes=1000, class_names="imagenet-1k", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        interpolation=interpolation, crop_pct=size / resize, top1=top1, top1_data="ImageNet-1k val",
        pretrain_data="SWAG IG-3.6B (weakly supervised)" if swag else "ImageNet-1k",
        finetune_data="ImageNet-1k" if swag else None,
        license=SWAG_LICENSE if swag else "BSD-3-Clause (torchvision)",
        sha256_prefix=file.rsplit("-", 1)[1].split(".")[0], reference=f"torchvision.models.{enum}",
        notes={"e2e": "trunk fine-tuned end to end on ImageNet-1k", "linear": "frozen SWAG trunk, linear classifier "
               "trained on ImageNet-1k"}.get(swag, "trained from scratch on ImageNet-1k (DeiT-style recipe)"))


_TORCHVISION = [
    _tv("tv-vit-b16-in1k", "ViT_B_16_Weights.IMAGENET1K_V1", "ViT-B/16", "vit_b_16-c867db91.pth", 224, 256,
        "bilinear", 81.072),
    _tv("tv-vit-b16-swag-e2e-384", "ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1", "ViT-B/16", "vit_b_16_swag-9ac1b537.pth",
        384, 384, "bicubic", 85.304, "e2e"),
    _tv("tv-vit-b16-swag-linear-224", "ViT_B_16_Weights.IMAGENET1K_SWAG_LINEAR_V1", "ViT-B/16",
        "vit_b_16_lc_swag-4e70ced5.pth", 224, 224, "bicubic", 81.886, "linear"),
    _tv("tv-vit-b32-in1k", "ViT_B_32_Weights.IMAGENET1K_V1", "ViT-B/32", "vit_b_32-d86f8d99.pth", 224, 256,
        "bilinear", 75.912),
    _tv("tv-vit-l16-in1k", "ViT_L_16_Weights.IMAGENET1K_V1", "ViT-L/16", "vit_l_16-852ce7e3.pth", 224, 242,
        "bilinear", 79.662),
    _tv("tv-vit-l16-swag-e2e-512", "ViT_L_16_Weights.IMAGENET1K_SWAG_E2E_V1", "ViT-L/16", "vit_l_16_swag-4f3808c9.pth",
        512, 512, "bicubic", 88.064, "e2e"),
    _tv("tv-vit-l16-swag-linear-224", "ViT_L_16_Weights.IMAGENET1K_SWAG_LINEAR_V1", "ViT-L/16",
        "vit_l_16_lc_swag-4d563306.pth", 224, 224, "bicubic", 85.146, "linear"),
    _tv("tv-vit-l32-in1k", "ViT_L_32_Weights.IMAGENET1K_V1", "ViT-L/32", "vit_l_32-c7638314.pth", 224, 256,
        "bilinear", 76.972),
    _tv("tv-vit-h14-swag-e2e-518", "ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1", "ViT-H/14", "vit_h_14_swag-80465313.pth",
        518, 518, "bicubic", 88.552, "e2e"),
    _tv("tv-vit-h14-swag-linear-224", "ViT_H_14_Weights.IMAGENET1K_SWAG_LINEAR_V1", "ViT-H/14",
        "vit_h_14_lc_swag-c1eb923e.pth", 224, 224, "bicubic", 85.708, "linear"),
]


# ------------------------------------------------------------------------------------------------ Hugging Face repos
def _hf_google(repo, variant, size, in21k):
    """google/vit-*: the original release converted by Hugging Face. The in21k repositories hold ViTModel weights
    (no classifier; the pooler is the pre-logits layer); the others ImageNet-1k classifiers."""
    return PretrainedCheckpoint(
        name=f"hf-google-{repo}", source="hf", uri=f"hf-hub:google/{repo}", format="hf-folder", variant=variant,
        image_size=size, num_classes=0 if in21k else 1000, class_names=None if in21k else "imagenet-1k", mean=HALF,
        std=HALF, interpolation="bilinear", crop_pct=1.0, top1=None, top1_data=None, pretrain_data="ImageNet-21k",
        finetune_data=None if in21k else "ImageNet-1k", license="Apache-2.0", hf_hub_id=f"google/{repo}",
        reference=f"https://huggingface.co/google/{repo}",
        notes="no classifier head" if in21k else "the model card states no accuracy of its own")


def _hf_deit(repo, variant, size, top1, distilled=False):
    """facebook/deit-*: DeiT (ImageNet-1k only), converted from timm by Hugging Face; accuracies from DeiT's README."""
    return PretrainedCheckpoint(
        name=f"hf-facebook-{repo}", source="hf", uri=f"hf-hub:facebook/{repo}", format="hf-folder", variant=variant,
        image_size=size, num_classes=1000, class_names="imagenet-1k", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        interpolation="bicubic", crop_pct=0.875 if size == 224 else 1.0, top1=top1, top1_data="ImageNet-1k val",
        pretrain_data="ImageNet-1k", finetune_data=None, license="Apache-2.0", hf_hub_id=f"facebook/{repo}",
        distilled=distilled, reference=DEIT_README,
        notes="distillation token and head (DeiTForImageClassificationWithTeacher)" if distilled else "")


_HF = [
    _hf_google("vit-base-patch16-224", "ViT-B/16", 224, False),
    _hf_google("vit-base-patch16-384", "ViT-B/16", 384, False),
    _hf_google("vit-base-patch32-384", "ViT-B/32", 384, False),
    _hf_google("vit-large-patch16-224", "ViT-L/16", 224, False),
    _hf_google("vit-large-patch16-384", "ViT-L/16", 384, False),
    _hf_google("vit-large-patch32-384", "ViT-L/32", 384, False),
    _hf_google("vit-base-patch16-224-in21k", "ViT-B/16", 224, True),
    _hf_google("vit-base-patch32-224-in21k", "ViT-B/32", 224, True),
    _hf_google("vit-large-patch16-224-in21k", "ViT-L/16", 224, True),
    _hf_google("vit-large-patch32-224-in21k", "ViT-L/32", 224, True),
    _hf_google("vit-huge-patch14-224-in21k", "ViT-H/14", 224, True),
    _hf_deit("deit-tiny-patch16-224", "ViT-Ti/16", 224, 72.2),
    _hf_deit("deit-small-patch16-224", "ViT-S/16", 224, 79.9),
    _hf_deit("deit-base-patch16-224", "ViT-B/16", 224, 81.8),
    _hf_deit("deit-base-patch16-384", "ViT-B/16", 384, 82.9),
    _hf_deit("deit-tiny-distilled-patch16-224", "ViT-Ti/16", 224, 74.5, True),
    _hf_deit("deit-small-distilled-patch16-224", "ViT-S/16", 224, 81.2, True),
    _hf_deit("deit-base-distilled-patch16-224", "ViT-B/16", 224, 83.4, True),
    _hf_deit("deit-base-distilled-patch16-384", "ViT-B/16", 384, 85.2, True),
]


# ----------------------------------------------------------------------------------------------- timm's hub names
def _timm(timm_name, variant, size, num_classes, crop_pct, *, pretrain, finetune, mean=HALF, std=HALF, top1=None,
          distilled=False, notes="", reference="timm.models.get_pretrained_cfg"):
    """timm's hub copy (hf-hub:timm/<name>); preprocessing as timm's pretrained config says."""
    class_names = {1000: "imagenet-1k", 21843: "imagenet-21k"}.get(num_classes)
    return PretrainedCheckpoint(
        name=f"timm-{timm_name}", source="timm", uri=f"hf-hub:timm/{timm_name}", format="timm-hub", variant=variant,
        image_size=size, num_classes=num_classes, class_names=class_names, mean=mean, std=std,
        interpolation="bicubic", crop_pct=crop_pct, top1=top1, top1_data="ImageNet-1k val" if top1 else None,
        pretrain_data=pretrain, finetune_data=finetune, license="Apache-2.0", hf_hub_id=f"timm/{timm_name}",
        timm_name=timm_name, distilled=distilled, reference=reference, notes=notes)


_I21K, _I1K = "ImageNet-21k", "ImageNet-1k"
_TIMM = [
    _timm("vit_base_patch16_224.augreg2_in21k_ft_in1k", "ViT-B/16", 224, 1000, 0.9, pretrain=_I21K, finetune=_I1K,
          notes="augreg fine-tune re-done by timm with more augmentation"),
    _timm("vit_base_patch16_224.augreg_in21k_ft_in1k", "ViT-B/16", 224, 1000, 0.9, pretrain=_I21K, finetune=_I1K),
    _timm("vit_base_patch16_384.augreg_in21k_ft_in1k", "ViT-B/16", 384, 1000, 1.0, pretrain=_I21K, finetune=_I1K),
    _timm("vit_base_patch16_224.augreg_in21k", "ViT-B/16", 224, 21843, 0.9, pretrain=_I21K, finetune=None),
    _timm("vit_base_patch16_224.augreg_in1k", "ViT-B/16", 224, 1000, 0.9, pretrain=_I1K, finetune=_I1K),
    _timm("vit_base_patch16_224.orig_in21k", "ViT-B/16", 224, 0, 0.9, pretrain=_I21K, finetune=None,
          notes="the original release's ImageNet-21k weights without their zero head"),
    _timm("vit_base_patch16_384.orig_in21k_ft_in1k", "ViT-B/16", 384, 1000, 1.0, pretrain=_I21K, finetune=_I1K),
    _timm("vit_base_patch32_224.augreg_in21k_ft_in1k", "ViT-B/32", 224, 1000, 0.9, pretrain=_I21K, finetune=_I1K),
    _timm("vit_base_patch8_224.augreg2_in21k_ft_in1k", "ViT-B/8", 224, 1000, 0.9, pretrain=_I21K, finetune=_I1K),
    _timm("vit_small_patch16_224.augreg_in21k_ft_in1k", "ViT-S/16", 224, 1000, 0.9, pretrain=_I21K, finetune=_I1K),
    _timm("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "ViT-Ti/16", 224, 1000, 0.9, pretrain=_I21K, finetune=_I1K),
    _timm("vit_large_patch16_224.augreg_in21k_ft_in1k", "ViT-L/16", 224, 1000, 0.9, pretrain=_I21K, finetune=_I1K),
    _timm("vit_large_patch16_384.augreg_in21k_ft_in1k", "ViT-L/16", 384, 1000, 1.0, pretrain=_I21K, finetune=_I1K),
    _timm("vit_large_patch32_384.orig_in21k_ft_in1k", "ViT-L/32", 384, 1000, 1.0, pretrain=_I21K, finetune=_I1K),
    _timm("vit_huge_patch14_224.orig_in21k", "ViT-H/14", 224, 0, 0.9, pretrain=_I21K, finetune=None,
          notes="the original release's ImageNet-21k weights without their zero head"),
    _timm("vit_base_r50_s16_384.orig_in21k_ft_in1k", "R50+ViT-B/16", 384, 1000, 1.0, pretrain=_I21K, finetune=_I1K),
    _timm("vit_large_r50_s32_384.augreg_in21k_ft_in1k", "R50+ViT-L/32", 384, 1000, 1.0, pretrain=_I21K,
          finetune=_I1K),
    _timm("deit_base_patch16_224.fb_in1k", "ViT-B/16", 224, 1000, 0.9, pretrain=_I1K, finetune=None,
          mean=IMAGENET_MEAN, std=IMAGENET_STD, top1=81.8, reference=DEIT_README),
    _timm("deit_base_distilled_patch16_224.fb_in1k", "ViT-B/16", 224, 1000, 0.9, pretrain=_I1K, finetune=None,
          mean=IMAGENET_MEAN, std=IMAGENET_STD, top1=83.4, distilled=True, reference=DEIT_README),
]

CATALOG: tuple[PretrainedCheckpoint, ...] = (*_ORIGINAL, *_AUGREG, *_TORCHVISION, *_HF, *_TIMM)
_BY_NAME = {entry.name: entry for entry in CATALOG}


def _aliases() -> dict[str, PretrainedCheckpoint]:
    """Other spellings users bring from the ecosystem: the Hugging Face repo id and timm's name."""
    out = {}
    for entry in CATALOG:
        if entry.hf_hub_id:
            out.setdefault(entry.hf_hub_id, entry)
        if entry.source == "timm":
            out.setdefault(entry.timm_name, entry)
    return out


_ALIASES = _aliases()


def list_pretrained(filter: str | None = None) -> list[PretrainedCheckpoint]:
    """The catalog's entries; `filter` is a glob on the name ("*b16*", "tv-*") or, without wildcards, a substring."""
    if not filter:
        return list(CATALOG)
    pattern = filter.lower() if any(c in filter for c in "*?[") else f"*{filter.lower()}*"
    return [entry for entry in CATALOG if fnmatch.fnmatchcase(entry.name.lower(), pattern)]


def find_pretrained(name: str) -> PretrainedCheckpoint | None:
    """The entry of a catalog name, or of a Hugging Face repo id or timm name that an entry carries; else None."""
    key = str(name).strip()
    return _BY_NAME.get(key) or _BY_NAME.get(key.lower()) or _ALIASES.get(key)


def get_pretrained(name: str) -> PretrainedCheckpoint:
    """The entry of `name`; an unknown name is a one-line KeyError-free ValueError naming the closest ones."""
    entry = find_pretrained(name)
    if entry is None:
        raise ValueError(f"unknown pre-trained checkpoint {name!r}{suggest(name)}")
    return entry


def closest_names(name: str, n: int = 3) -> list[str]:
    """The catalog names nearest to `name` (difflib), for error messages."""
    key = str(name).strip().lower()
    return difflib.get_close_matches(key, [*_BY_NAME, *_ALIASES], n=n, cutoff=0.5)


def suggest(name: str) -> str:
    close = closest_names(name)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{hint} (vitkit models --pretrained lists them all)"


@lru_cache(maxsize=None)
def _class_list(key: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    text = resources.files(__package__).joinpath("data", f"{key}.txt").read_text(encoding="utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines() if line]
    return tuple(r[0] for r in rows), tuple(r[1] for r in rows)


def class_names(key: str) -> list[str]:
    """The class names of "imagenet-1k" (1,000) or "imagenet-21k" (21,843), in the order of the heads' outputs."""
    if key not in CLASS_LISTS:
        raise ValueError(f"unknown class list {key!r}; expected one of {', '.join(CLASS_LISTS)}")
    return list(_class_list(key)[1])


def class_ids(key: str) -> list[str]:
    """The WordNet ids ("n01440764") of a class list, in the same order as `class_names`."""
    if key not in CLASS_LISTS:
        raise ValueError(f"unknown class list {key!r}; expected one of {', '.join(CLASS_LISTS)}")
    return list(_class_list(key)[0])


def wordnet_index(names) -> dict[str, int]:
    """{WordNet id: output index} when `names` are one of the shipped class lists (ImageNet folders are named by
    WordNet id, the checkpoints' classes by name); else empty."""
    names = tuple(names)
    for key, count in CLASS_LISTS.items():
        if len(names) == count and names == _class_list(key)[1]:
            return {wnid: i for i, wnid in enumerate(_class_list(key)[0])}
    return {}


__all__ = ["PretrainedCheckpoint", "CATALOG", "list_pretrained", "find_pretrained", "get_pretrained",
           "closest_names", "class_names", "class_ids", "wordnet_index", "SOURCES", "FORMATS"]
