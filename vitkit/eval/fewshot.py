"""Few-shot linear evaluation (the paper's Section 4.1 and Appendix) and a linear probe, on frozen features.

Few-shot: take k images per class from the training split, fit a closed-form regularised least-squares map from
their frozen representations (the `pre_logits` features the head sees) to {-1, 1} one-vs-all targets, classify the
test split by the largest output, and average the accuracy over several random draws of the k shots.

    train = extract_features(model, train_batches)     # (features (N, F), labels (N,))
    test = extract_features(model, test_batches)
    results = fewshot_accuracy(*train, *test, shots=(1, 5, 10, 25))   # {k: FewShotResult}
    probe = linear_probe_accuracy(*train, *test)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

BIAS_CONSTANT = 100.0  # the constant feature that carries the bias: large, so the bias is almost unregularised
DEFAULT_L2_REG = 1.0  # ridge strength on standardised features (see `fit_least_squares`)


@torch.no_grad()
def extract_features(model, batches: Iterable, device: str | torch.device | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Frozen representations of a data set: (features (N, F), labels (N,)) from batches of (images, labels).

    The features are what the classifier head sees (`forward_head(..., pre_logits=True)`): the class token's (or
    the mean patch token's) final state, after the representation layer where the model has one.
    """
    was_training = model.training
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    features, labels = [], []
    try:
        for images, targets in batches:
            tokens = model.forward_features(images.to(device))
            features.append(model.forward_head(tokens, pre_logits=True).float().cpu().numpy())
            labels.append(torch.as_tensor(targets).cpu().numpy())
    finally:
        model.train(was_training)
    if not features:
        raise ValueError("extract_features got no batches")
    return np.concatenate(features).astype(np.float64), np.concatenate(labels).astype(np.int64)


@dataclass
class LeastSquaresClassifier:
    """A one-vs-all linear map fitted in closed form; `predict` gives class indices."""

    mean: np.ndarray  # (F,) of the training features, for standardising
    std: np.ndarray  # (F,)
    weights: np.ndarray  # (F + 1, classes), the last row for the bias feature

    def design(self, features: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.std
        return np.concatenate([x, np.full((len(x), 1), BIAS_CONSTANT)], axis=1)

    def scores(self, features: np.ndarray) -> np.ndarray:
        return self.design(features) @ self.weights

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.scores(features).argmax(axis=1)


def fit_least_squares(features: np.ndarray, labels: np.ndarray, num_classes: int,
                      l2_reg: float = DEFAULT_L2_REG) -> LeastSquaresClassifier:
    """Ridge regression to {-1, 1} targets in closed form: W = (X^T X + l2 I)^-1 X^T Y.

    X is the standardised features (by their own mean and standard deviation) plus a constant BIAS_CONSTANT column;
    Y is 2 * one_hot(labels) - 1. With fewer examples than features (the few-shot case) the same W is computed
    from the smaller system, W = X^T (X X^T + l2 I)^-1 Y.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"expected features (N, F) and labels (N,), got {features.shape} and {labels.shape}")
    if l2_reg <= 0:
        raise ValueError(f"l2_reg must be positive, got {l2_reg}")
    mean = features.mean(axis=0)
    std = features.std(axis=0) + 1e-5
    classifier = LeastSquaresClassifier(mean, std, np.zeros((features.shape[1] + 1, num_classes)))
    x = classifier.design(features)  # (n, F + 1)
    y = 2.0 * np.eye(num_classes)[labels] - 1.0  # (n, classes) in {-1, 1}
    n, d = x.shape
    if n >= d:
        classifier.weights = np.linalg.solve(x.T @ x + l2_reg * np.eye(d), x.T @ y)
    else:
        classifier.weights = x.T @ np.linalg.solve(x @ x.T + l2_reg * np.eye(n), y)
    return classifier


@dataclass
class FewShotResult:
    shots: int  # examples per class
    mean: float  # accuracy on the test split, averaged over the draws
    std: float  # standard deviation over the draws
    accuracies: list[float] = field(default_factory=list)  # one per draw


def draw_shots(labels: np.ndarray, shots: int, rng: np.random.Generator, classes: Sequence[int]) -> np.ndarray:
    """Indices of `shots` examples of each class, drawn without replacement."""
    picked = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < shots:
            raise ValueError(f"{shots}-shot evaluation needs {shots} training examples of class {c}, "
                             f"found {len(members)}")
        picked.append(rng.choice(members, size=shots, replace=False))
    return np.concatenate(picked)


def fewshot_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                     test_labels: np.ndarray, shots: Sequence[int] = (1, 5, 10, 25), num_draws: int = 5,
                     l2_reg: float = DEFAULT_L2_REG, seed: int = 0) -> dict[int, FewShotResult]:
    """k-shot linear accuracy for every k in `shots`, each averaged over `num_draws` random draws of the k examples
    per class from the training features; the test features are all used. The draws are fixed by `seed`."""
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    if num_draws < 1:
        raise ValueError(f"num_draws must be at least 1, got {num_draws}")
    classes = np.unique(train_labels)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    results = {}
    for k in shots:
        if k < 1:
            raise ValueError(f"shots must be at least 1, got {k}")
        rng = np.random.default_rng([seed, k])
        accuracies = []
        for _ in range(num_draws):
            chosen = draw_shots(train_labels, k, rng, classes)
            classifier = fit_least_squares(train_features[chosen], train_labels[chosen], num_classes, l2_reg)
            accuracies.append(float((classifier.predict(test_features) == test_labels).mean()))
        results[k] = FewShotResult(k, float(np.mean(accuracies)), float(np.std(accuracies)), accuracies)
    return results


def linear_probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                          test_labels: np.ndarray, l2_reg: float = 1.0, max_iter: int = 1000) -> float:
    """A linear probe: multinomial logistic regression (L2 strength 1 / C = l2_reg, on standardised features) fitted
    on all training features; accuracy on the test features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / l2_reg, max_iter=max_iter))
    probe.fit(np.asarray(train_features), np.asarray(train_labels))
    return float((probe.predict(np.asarray(test_features)) == np.asarray(test_labels)).mean())


def fewshot_evaluate(model, train_batches: Iterable, test_batches: Iterable, shots: Sequence[int] = (1, 5, 10, 25),
                     num_draws: int = 5, l2_reg: float = DEFAULT_L2_REG, seed: int = 0, linear_probe: bool = True,
                     device: str | torch.device | None = None) -> dict:
    """Features once, then few-shot accuracy for every k and (optionally) the linear probe:
    {"fewshot": {k: FewShotResult}, "linear_probe": accuracy or None, "num_train": N, "num_test": M}."""
    train_x, train_y = extract_features(model, train_batches, device)
    test_x, test_y = extract_features(model, test_batches, device)
    return {
        "fewshot": fewshot_accuracy(train_x, train_y, test_x, test_y, shots, num_draws, l2_reg, seed),
        "linear_probe": linear_probe_accuracy(train_x, train_y, test_x, test_y) if linear_probe else None,
        "num_train": len(train_y),
        "num_test": len(test_y),
    }


def parse_shots(text: str) -> list[int]:
    """"1,5,10,25" -> [1, 5, 10, 25], for the command line."""
    try:
        shots = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--few-shot expects comma-separated whole numbers such as 1,5,10,25, got {text!r}") from None
    if not shots or min(shots) < 1:
        raise ValueError(f"--few-shot expects positive numbers such as 1,5,10,25, got {text!r}")
    return shots


def format_results(results: dict) -> str:
    """The report `vitkit eval --few-shot` prints."""
    lines = []
    for k, r in results["fewshot"].items():
        label = f"{k}-shot linear accuracy:"
        lines.append(f"{label:<27}{100 * r.mean:6.2f}% +- {100 * r.std:.2f} "
                     f"(mean +- std over {len(r.accuracies)} draws, {results['num_test']} test images)")
    if results.get("linear_probe") is not None:
        label = "linear probe accuracy:"
        lines.append(f"{label:<27}{100 * results['linear_probe']:6.2f}% "
                     f"(logistic regression on {results['num_train']} training images)")
    return "\n".join(lines)
