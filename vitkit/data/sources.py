"""From a `--data` argument to training and evaluation sets: the layout is detected, the split chosen.

    digits                       scikit-learn's digits; its fixed test split is 20% of each class (seed 0)
    DIR with train/ and val/     (or validation/, test/): the folders are the splits
    DIR with train/ only         a hold-out of train/ is the validation split (the CIFAR-10 JPEG tree)
    DIR/<class>/<image>          a hold-out of the folder is the validation split
    CIFAR-10/100 pickle folder   data_batch_* / test_batch (or train / test); test is the evaluation split

A hold-out takes a seeded share (or count) of each class, with its own seed (`split_seed`), so every run on the
same data holds out the same images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UsageError
from .datasets import (VAL_FOLDER_NAMES, ImageSet, cifar_pickle_root, load_cifar_pickle, load_digits_set,
                       scan_image_folder)

DIGITS = "digits"
DIGITS_TEST_FRACTION = 0.2  # the fixed test split of the built-in digits


@dataclass
class DataSplits:
    classes: list[str]
    train: ImageSet | None
    val: ImageSet | None
    val_name: str  # what the evaluation split is called in messages: "test", "val", "hold-out", "all"
    description: str
    bad_files: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Layout:
    kind: str  # "digits", "cifar", "split_folders", "folder"
    train_root: Path | None = None
    val_root: Path | None = None


def detect_layout(data: str) -> Layout:
    if data == DIGITS and not Path(data).exists():
        return Layout("digits")
    path = Path(data).expanduser()
    if not path.exists():
        raise UsageError(f"--data {data}: no such folder (expected 'digits', an ImageFolder tree or a CIFAR folder)")
    if not path.is_dir():
        raise UsageError(f"--data {data}: not a folder (unpack archives first)")
    cifar = cifar_pickle_root(path)
    if cifar is not None:
        return Layout("cifar", cifar, cifar)
    subfolders = {p.name.lower(): p for p in path.iterdir() if p.is_dir()}
    if "train" in subfolders:
        val = next((subfolders[n] for n in VAL_FOLDER_NAMES if n in subfolders), None)
        if val is not None:
            return Layout("split_folders", subfolders["train"], val)
        others = set(subfolders) - {"train"}
        if not others:
            return Layout("folder", subfolders["train"])
    return Layout("folder", path)


def holdout_indices(labels: np.ndarray, num_classes: int, *, fraction: float | None = None,
                    per_class: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: from each class a seeded `per_class` images, or `fraction` of them (at least one,
    and always leaving one for training)."""
    train, held = [], []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        order = members[np.random.default_rng([seed, c]).permutation(len(members))]
        if per_class is not None:
            n = per_class
        else:
            n = max(1, int(round(fraction * len(members)))) if len(members) > 1 else 0
        n = min(n, max(len(members) - 1, 0))
        held.append(order[:n])
        train.append(order[n:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def _limit(images: ImageSet, limit: int | None, seed: int) -> ImageSet:
    if limit is None:
        return images
    keep = []
    for c in range(len(images.classes)):
        members = np.flatnonzero(images.labels == c)
        keep.extend(members[np.random.default_rng([seed, c]).permutation(len(members))[:limit]])
    return images.subset(sorted(keep))


def open_data(data: str, *, want_train: bool = True, want_val: bool = True, val_split: str = "auto",
              val_fraction: float = 0.1, val_per_class: int | None = None, split_seed: int = 0,
              limit_per_class: int | None = None, max_bad_fraction: float = 0.01, cache: str = "auto",
              flat_eval: str = "holdout", log: Callable[[str], None] = print, progress: bool = True,
              min_classes: int = 1) -> DataSplits:
    """The training and evaluation sets of `data`.

    min_classes: refuse data with fewer classes (training passes 2: one class teaches nothing and scores 100%).

    flat_eval: what evaluation uses for a folder without its own val/test split: "holdout" (the images a training
    run on the same folder held out) or "all" (every image: the folder is a test set).
    """
    layout = detect_layout(data)
    scan = dict(max_bad_fraction=max_bad_fraction, cache=cache, limit_per_class=limit_per_class, seed=split_seed,
                log=log, progress=progress)

    def hold_out(full: ImageSet) -> tuple[ImageSet, ImageSet]:
        train_idx, val_idx = holdout_indices(full.labels, len(full.classes), fraction=val_fraction,
                                             per_class=val_per_class, seed=split_seed)
        if len(val_idx) == 0:
            raise UsageError(f"{full.name}: too few images per class to hold out a validation split")
        if val_per_class is not None:
            counts = np.bincount(full.labels, minlength=len(full.classes))
            short = [f"{full.classes[c]} ({n})" for c, n in enumerate(counts) if n <= val_per_class]
            if short:
                log(f"note: val_per_class={val_per_class}, but {len(short)} class(es) have no more images than that: "
                    f"{', '.join(short[:5])}{' ...' if len(short) > 5 else ''}; each keeps one image for training "
                    "and holds out the rest")
        return full.subset(train_idx), full.subset(val_idx, name=f"{full.name} (hold-out)")

    if layout.kind == "digits":
        full = load_digits_set()
        train_idx, test_idx = holdout_indices(full.labels, 10, fraction=DIGITS_TEST_FRACTION, seed=0)
        train, val = full.subset(train_idx), full.subset(test_idx, name="digits (test)")
        train = _limit(train, limit_per_class, split_seed)
        val_name = "test"
        if val_split == "holdout":
            train, val = hold_out(train)
            val_name = "hold-out"
        splits = DataSplits(full.classes, train, val, val_name,
                            "scikit-learn digits (1,797 8x8 images, 10 classes)")
    elif layout.kind == "cifar":
        train = _limit(load_cifar_pickle(layout.train_root, "train"), limit_per_class, split_seed) \
            if want_train or val_split == "holdout" else None
        val, val_name = None, "test"
        if val_split == "holdout":
            train, val = hold_out(train)
            val_name = "hold-out"
        elif want_val:
            val = load_cifar_pickle(layout.train_root, "test")
        classes = (train or val).classes
        splits = DataSplits(classes, train, val, val_name, f"CIFAR ({len(classes)} classes) in {layout.train_root}")
    elif layout.kind == "split_folders" and val_split != "holdout":
        train = scan_image_folder(layout.train_root, **scan) if want_train else None
        val = scan_image_folder(layout.val_root, **scan) if want_val else None
        if train is not None and val is not None and train.classes != val.classes:
            raise UsageError(f"{layout.val_root}: its classes differ from {layout.train_root}'s "
                             f"({len(val.classes)} against {len(train.classes)})")
        classes = (train or val).classes
        splits = DataSplits(classes, train, val, layout.val_root.name, f"ImageFolder {Path(data)}",
                            bad_files=(train.bad_files if train else []) + (val.bad_files if val else []))
    else:
        full = scan_image_folder(layout.train_root, **scan)
        if not want_train and flat_eval == "all" and val_split != "holdout":
            splits = DataSplits(full.classes, None, full, "all", f"ImageFolder {layout.train_root}", full.bad_files)
        else:
            train, val = hold_out(full) if val_split != "none" else (full, None)
            splits = DataSplits(full.classes, train, val, "hold-out", f"ImageFolder {layout.train_root}",
                                full.bad_files)
    if len(splits.classes) < min_classes:
        where = layout.train_root if layout.train_root is not None else data
        found = ", ".join(repr(c) for c in splits.classes)
        raise UsageError(f"--data {where}: only {len(splits.classes)} class ({found}); training needs at least "
                         f"{min_classes} classes, one folder each ({where}/<class>/<image>)")
    if val_split == "none":
        splits.val = None
    if not want_train:
        splits.train = None
    return splits


__all__ = ["open_data", "detect_layout", "holdout_indices", "DataSplits", "DIGITS"]
