"""The paper recipes say what their papers say: one row per stated setting, with where the paper (or the code
released with it) states it. A recipe that drifts from its paper fails here, naming the field and the source.

ViT: Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words" (Section 3.1, Appendix B.1 and B.1.1, Tables 3-4).
DeiT: Touvron et al. 2021, "Training data-efficient image transformers" (Table 9) and its code's defaults
(facebookresearch/deit main.py, datasets.py).
AugReg: Steiner et al. 2021, "How to train your ViT?", as big_vision's configs/vit_i1k.py and the released
checkpoint S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0.
"""

from __future__ import annotations

import pytest

from vitkit.training.config import load_recipe

VIT_B1 = "ViT Appendix B.1 (pre-training: Adam, batch 4096, 10k warm-up, clipping at 1)"
VIT_T3_I21K = "ViT Table 3, ViT-B/16 on ImageNet-21k"
VIT_T3_I1K = "ViT Table 3, ViT-B/16 on ImageNet"
VIT_HEAD = "ViT Section 3.1 (MLP head with one hidden layer at pre-training; width 768 as the released pre-logits)"
VIT_FT = "ViT Appendix B.1.1 (fine-tuning: SGD momentum 0.9, no weight decay, cosine, batch 512, clipping at 1)"
VIT_T4 = "ViT Table 4 (fine-tuning steps and learning-rate grid)"
VIT_RES = "ViT Section 3.2 and B.1.1 (fine-tuning at 384 px with a new zero-initialised head)"
VIT_EMA = "ViT Appendix B.1.1 (Polyak averaging with factor 0.9999; no warm-up in the released code)"
DEIT_T9 = "DeiT Table 9 (DeiT-S/B column)"
DEIT_CODE = "DeiT code defaults (main.py: --min-lr, --train-interpolation, --aa, --reprob, --repeated-aug)"
DEIT_EVAL = "DeiT code (datasets.py: resize to 256/224 of the size, centre crop; eval_crop_ratio 0.875)"
DEIT_T1 = "DeiT Table 1 (DeiT-S: width 384, 6 heads, depth 12 = ViT-S/16)"
TIMM = "timm create_transform defaults DeiT uses (RandomResizedCrop scale 0.08-1, ImageNet mean/std)"
AUGREG = "big_vision configs/vit_i1k.py (AugReg, S/16: medium2)"
AUGREG_CKPT = "AugReg's released S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0"

PAPERS = {
    "vit-b16-i21k": [
        ("model", "ViT-B/16", VIT_T3_I21K), ("epochs", 90, VIT_T3_I21K), ("lr", 1e-3, VIT_T3_I21K),
        ("schedule", "linear", VIT_T3_I21K), ("weight_decay", 0.03, VIT_T3_I21K), ("dropout", 0.1, VIT_T3_I21K),
        ("optimizer", "adam", VIT_B1), ("beta1", 0.9, VIT_B1), ("beta2", 0.999, VIT_B1),
        ("batch_size", 4096, VIT_B1), ("warmup_steps", 10_000, VIT_B1), ("grad_clip", 1.0, VIT_B1),
        ("image_size", 224, VIT_B1), ("representation_size", 768, VIT_HEAD),
    ],
    "vit-imagenet-scratch": [
        ("model", "ViT-B/16", VIT_T3_I1K), ("epochs", 300, VIT_T3_I1K), ("lr", 3e-3, VIT_T3_I1K),
        ("schedule", "cosine", VIT_T3_I1K), ("weight_decay", 0.3, VIT_T3_I1K), ("dropout", 0.1, VIT_T3_I1K),
        ("optimizer", "adam", VIT_B1), ("beta1", 0.9, VIT_B1), ("beta2", 0.999, VIT_B1),
        ("batch_size", 4096, VIT_B1), ("warmup_steps", 10_000, VIT_B1), ("grad_clip", 1.0, VIT_B1),
        ("image_size", 224, VIT_B1), ("representation_size", 768, VIT_HEAD),
    ],
    "finetune": [
        ("optimizer", "sgd", VIT_FT), ("momentum", 0.9, VIT_FT), ("weight_decay", 0.0, VIT_FT),
        ("schedule", "cosine", VIT_FT), ("batch_size", 512, VIT_FT), ("grad_clip", 1.0, VIT_FT),
        ("steps", 10_000, VIT_T4 + ", CIFAR-10/100"), ("image_size", 384, VIT_RES), ("reset_head", True, VIT_RES),
        ("representation_size", None, VIT_HEAD + ": a single linear layer at fine-tuning"),
    ],
    "finetune-imagenet": [
        ("optimizer", "sgd", VIT_FT), ("momentum", 0.9, VIT_FT), ("weight_decay", 0.0, VIT_FT),
        ("schedule", "cosine", VIT_FT), ("batch_size", 512, VIT_FT), ("grad_clip", 1.0, VIT_FT),
        ("steps", 20_000, VIT_T4 + ", ImageNet"), ("image_size", 384, VIT_RES), ("reset_head", True, VIT_RES),
        ("ema_decay", 0.9999, VIT_EMA), ("ema_warmup", False, VIT_EMA),
    ],
    "deit": [
        ("model", "ViT-S/16", DEIT_T1), ("image_size", 224, DEIT_T9), ("epochs", 300, DEIT_T9),
        ("batch_size", 1024, DEIT_T9), ("optimizer", "adam", DEIT_T9 + " (AdamW)"),
        ("lr", 5e-4 * 1024 / 512, DEIT_T9 + " (5e-4 x batch / 512)"), ("schedule", "cosine", DEIT_T9),
        ("weight_decay", 0.05, DEIT_T9), ("warmup_epochs", 5, DEIT_T9), ("warmup_steps", 0, DEIT_T9),
        ("label_smoothing", 0.1, DEIT_T9), ("dropout", 0.0, DEIT_T9), ("drop_path", 0.1, DEIT_T9),
        ("repeated_augmentation", 3, DEIT_T9), ("grad_clip", 0.0, DEIT_T9), ("randaugment_ops", 2, DEIT_CODE),
        ("randaugment_magnitude", 9, DEIT_T9 + " (RandAugment 9/0.5)"), ("randaugment_magnitude_std", 0.5, DEIT_T9),
        ("randaugment_style", "timm", DEIT_CODE + " (rand-m9-mstd0.5-inc1)"),
        ("randaugment_increasing", True, DEIT_CODE + " (inc1)"), ("mixup_alpha", 0.8, DEIT_T9),
        ("cutmix_alpha", 1.0, DEIT_T9), ("mix_prob", 1.0, DEIT_CODE), ("random_erasing", 0.25, DEIT_T9),
        ("ema_decay", 0.0, DEIT_T9 + " (no EMA)"), ("min_lr", 1e-5, DEIT_CODE),
        ("interpolation", "bicubic", DEIT_CODE), ("crop", "inception", TIMM), ("crop_min_area", 0.08, TIMM),
        ("hflip", True, TIMM), ("mean", [0.485, 0.456, 0.406], TIMM), ("std", [0.229, 0.224, 0.225], TIMM),
        ("crop_pct", 0.875, DEIT_EVAL),
    ],
    "augreg": [
        ("model", "ViT-S/16", AUGREG), ("image_size", 224, AUGREG), ("batch_size", 4096, AUGREG),
        ("epochs", 300, AUGREG), ("optimizer", "adam", AUGREG), ("lr", 1e-3, AUGREG),
        ("weight_decay", 0.1, AUGREG_CKPT + " (big_vision's wd 1e-4 = 0.1 x lr)"), ("schedule", "cosine", AUGREG),
        ("warmup_steps", 10_000, AUGREG), ("grad_clip", 1.0, AUGREG), ("dropout", 0.0, AUGREG_CKPT),
        ("drop_path", 0.0, AUGREG_CKPT), ("randaugment_ops", 2, AUGREG + " (randaug(2,15))"),
        ("randaugment_magnitude", 15, AUGREG), ("randaugment_style", "big_vision", AUGREG),
        ("mixup_alpha", 0.5, AUGREG + " (mixup p=0.5)"), ("cutmix_alpha", 0.0, AUGREG),
        ("label_smoothing", 0.0, AUGREG + " (softmax_xent)"), ("representation_size", 384, AUGREG + " (rep_size)"),
        ("crop", "inception", AUGREG), ("crop_min_area", 0.05, AUGREG + " (inception_crop area_min 5)"),
        ("hflip", True, AUGREG), ("mean", None, AUGREG + " (value_range(-1, 1): 0.5)"),
        ("std", None, AUGREG + " (value_range(-1, 1): 0.5)"),
        ("crop_pct", 0.875, AUGREG + " (resize_small(256)|central_crop(224))"),
    ],
}


@pytest.mark.parametrize("recipe", sorted(PAPERS))
def test_the_recipe_sets_every_value_its_paper_states(recipe):
    config = load_recipe(recipe)
    wrong = [f"{field} = {getattr(config, field)!r}, the paper's {value!r} ({source})"
             for field, value, source in PAPERS[recipe]
             if getattr(config, field) != pytest.approx(value) if not isinstance(value, (str, bool, type(None)))
             or getattr(config, field) != value]
    assert not wrong, f"recipes/{recipe}.toml: " + "; ".join(wrong)


def test_fine_tuning_learning_rates_are_in_the_papers_grid():
    assert load_recipe("finetune").lr in (0.001, 0.003, 0.01, 0.03)  # Table 4, CIFAR
    assert load_recipe("finetune-imagenet").lr in (0.003, 0.01, 0.03, 0.06)  # Table 4, ImageNet
