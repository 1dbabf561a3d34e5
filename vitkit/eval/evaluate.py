"""Evaluating a classifier over a data loader, classifying single images, and the confusion-matrix figure."""

from __future__ import annotations

import contextlib
import math
import os
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .metrics import Counts


def autocast(device: torch.device, precision: str = "fp32"):
    """bf16/fp16 autocast on the device's type, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable, num_classes: int, device: torch.device | str | None = None,
             precision: str = "fp32", progress: bool = False, desc: str = "eval",
             total: int | None = None, flip: bool = False) -> Counts:
    """Counts (confusion matrix, top-5 hits, summed loss) of `model` over batches of (images, labels). With `flip`,
    each image's class probabilities are the mean of the image's and its mirror image's (test-time flip averaging;
    the loss is that of the averaged probabilities)."""
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    counts = Counts(num_classes)
    try:
        for images, labels in tqdm(batches, desc=desc, total=total, disable=not progress, leave=False,
                                   dynamic_ncols=True, unit="batch"):
            images = images.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(images).float()
                if flip:  # log of the mean probability: a valid logit for top-k and cross-entropy
                    mirrored = model(images.flip(-1)).float()
                    logits = torch.logaddexp(logits.log_softmax(1), mirrored.log_softmax(1)) - math.log(2)
            counts.update(logits, labels.to(logits.device))
    finally:
        model.train(was_training)
    return counts


@torch.no_grad()
def classify(model: torch.nn.Module, images: Sequence, transform, top_k: int = 5, batch_size: int = 32,
             device: torch.device | str | None = None) -> list[list[tuple[int, float]]]:
    """Top-k (class index, probability) for each PIL image."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([transform(img) for img in images[start:start + batch_size]]).to(device)
        probs = model(batch).float().softmax(dim=1)
        k = min(top_k, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        out.extend([list(zip(i.tolist(), v.tolist())) for i, v in zip(indices, values)])
    return out


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                   title: str = "confusion matrix") -> Path:
    """A PNG of the row-normalised confusion matrix (counts written in the cells when there are few classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoints.io import atomic_path

    cm = np.asarray(confusion, dtype=np.float64)
    k = len(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = min(4 + 0.45 * k, 24)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    cols = cm.shape[1]  # one more than the rows when predictions outside the data's classes are counted as "other"
    if k <= 40:
        ax.set_xticks(range(cols), labels=list(class_names)[:cols], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), labels=list(class_names)[:k], fontsize=8)
    if k <= 20:
        for i in range(k):
            for j in range(cols):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


__all__ = ["evaluate", "classify", "plot_confusion", "autocast"]


# ------------------------------------------------------------------------------------ checkpoints on data
def match_classes(model_class_names: Sequence[str] | None, num_model_classes: int, data_classes: Sequence[str],
                  where: str = "the data") -> np.ndarray:
    """For each of the data's classes, the model's class index.

    By name when the checkpoint names its classes; else by number when the data's folders are named 0, 1, ...;
    else by order when the counts agree. Anything else is a `UsageError` that says what did not match.
    """
    from ..errors import UsageError

    data_classes = list(data_classes)
    if model_class_names:
        index = {name: i for i, name in enumerate(model_class_names)}
        from ..hub.catalog import wordnet_index

        index.update(wordnet_index(model_class_names))  # ImageNet folders are named by WordNet id (n01440764)
        # one spelling of each accented name: macOS (and zips made there) write folder names decomposed (NFD)
        index.update({unicodedata.normalize("NFC", name): i for name, i in list(index.items())})
        found = [index.get(name, index.get(unicodedata.normalize("NFC", name))) for name in data_classes]
        missing = [name for name, i in zip(data_classes, found) if i is None]
        if missing:
            raise UsageError(f"{where}: class {missing[0]!r} is not one of the checkpoint's {num_model_classes} "
                             f"classes ({len(missing)} of {len(data_classes)} do not match by name)")
        return np.asarray(found, dtype=np.int64)
    if all(name.isdigit() for name in data_classes) and all(int(n) < num_model_classes for n in data_classes):
        return np.asarray([int(n) for n in data_classes], dtype=np.int64)
    if len(data_classes) == num_model_classes:
        return np.arange(num_model_classes, dtype=np.int64)
    raise UsageError(f"{where} has {len(data_classes)} classes but the checkpoint has {num_model_classes} (without "
                     f"class names); evaluate a checkpoint trained for these classes (vitkit finetune "
                     f"--init-from CKPT --num-classes {len(data_classes)} makes one)")


def eval_batches(model, images, batch_size: int = 64, num_workers: int = -1, label_map: np.ndarray | None = None):
    """A loader of (preprocessed images, labels) for an `ImageSet`, prepared as the model's checkpoint says.
    Also what feature extraction (`fewshot.extract_features`) takes."""
    from ..data import TransformedImages, auto_workers, eval_loader, eval_transform

    dataset = TransformedImages(images, eval_transform(model.preprocessing), label_map=label_map)
    return eval_loader(dataset, batch_size, auto_workers(images, num_workers))


def restrict_confusion(confusion: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, bool]:
    """The rows and columns of the classes in `keep` (model indices), plus a last "other" column counting
    predictions outside them when there are any. Returns (matrix, has_other)."""
    rows = confusion[keep]
    inside = rows[:, keep]
    other = rows.sum(axis=1) - inside.sum(axis=1)
    if other.any():
        return np.concatenate([inside, other[:, None]], axis=1), True
    return inside, False
