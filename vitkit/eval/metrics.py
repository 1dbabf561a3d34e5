"""Classification metrics from logits: top-k accuracy, a confusion matrix and the per-class accuracy it gives.

Everything is built from counts (a confusion matrix, top-k hits, a summed loss) so that results from several
processes or batches add up exactly before the ratios are taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> dict[int, int]:
    """Hits among the k best classes, per k (k larger than the class count counts every image)."""
    largest = min(max(ks), logits.shape[1])
    best = logits.topk(largest, dim=1).indices  # (B, k)
    hits = best == targets[:, None]
    return {k: int(hits[:, :min(k, largest)].any(dim=1).sum()) for k in ks}


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    n = max(len(targets), 1)
    return {k: hits / n for k, hits in topk_correct(logits, targets, ks).items()}


def confusion_matrix(predictions, targets, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; row = true class, column = predicted class."""
    p = torch.as_tensor(predictions).long().flatten().cpu()
    t = torch.as_tensor(targets).long().flatten().cpu()
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy()


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class (NaN for a class without images)."""
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)


class Counts:
    """Running sums over batches: confusion matrix, top-5 hits, summed loss."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.top5 = torch.zeros((), dtype=torch.long)
        self.loss_sum = torch.zeros((), dtype=torch.float64)

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits, targets = logits.float(), targets.long()
        self.loss_sum += F.cross_entropy(logits, targets, reduction="sum").double().cpu()
        self.top5 += topk_correct(logits, targets, (5,))[5]
        pred = logits.argmax(dim=1)
        self.confusion += torch.bincount((targets * self.num_classes + pred).cpu(),
                                         minlength=self.num_classes ** 2).reshape(self.num_classes, -1)

    def tensors(self) -> list[torch.Tensor]:
        """The sums, for `torch.distributed.all_reduce` (in place)."""
        return [self.confusion, self.top5, self.loss_sum]

    def result(self) -> "EvalResult":
        cm = self.confusion.numpy()
        count = int(cm.sum())
        return EvalResult(count=count, top1=float(np.trace(cm)) / max(count, 1),
                          top5=float(self.top5) / max(count, 1), loss=float(self.loss_sum) / max(count, 1),
                          confusion=cm)


@dataclass
class EvalResult:
    count: int
    top1: float
    top5: float
    loss: float
    confusion: np.ndarray  # (classes, classes), row = true class

    @property
    def per_class(self) -> np.ndarray:
        return per_class_accuracy(self.confusion)

    def summary(self) -> dict:
        return {"count": self.count, "top1": self.top1, "top5": self.top5, "loss": self.loss}


__all__ = ["topk_correct", "topk_accuracy", "confusion_matrix", "per_class_accuracy", "Counts", "EvalResult"]
