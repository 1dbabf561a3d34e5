"""Data: image sets (built-in digits, ImageFolder trees, CIFAR pickles), splits, transforms and loaders.

    splits = open_data("digits")                       # DataSplits(classes, train, val, ...)
    dataset = TransformedImages(splits.val, eval_transform(model.preprocessing))
"""

from .datasets import (IMAGE_EXTENSIONS, ImageSet, gather_image_files, is_image_file, load_cifar_pickle,
                       load_digits_set, read_image, read_images, scan_image_folder)
from .loader import StepBatchSampler, TransformedImages, auto_workers, eval_loader, mix_seed, train_loader
from .sources import DIGITS, DataSplits, detect_layout, holdout_indices, open_data
from .transforms import eval_transform, interpolation_mode, train_transform

__all__ = [
    "ImageSet", "DataSplits", "open_data", "detect_layout", "holdout_indices", "scan_image_folder",
    "load_digits_set", "load_cifar_pickle", "read_image", "read_images", "gather_image_files",
    "is_image_file", "IMAGE_EXTENSIONS", "DIGITS",
    "TransformedImages", "StepBatchSampler", "train_loader", "eval_loader", "auto_workers", "mix_seed",
    "eval_transform", "train_transform", "interpolation_mode",
]
