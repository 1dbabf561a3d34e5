"""Few-shot linear evaluation (closed-form least squares to {-1, 1} targets) and the linear probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vitkit
from vitkit.eval.fewshot import (BIAS_CONSTANT, draw_shots, extract_features, fewshot_accuracy, fewshot_evaluate,
                                 fit_least_squares, format_results, linear_probe_accuracy, parse_shots)


def test_least_squares_by_hand():
    # features -1 and 1 (already mean 0, std 1), classes 0 and 1. With the bias column c:
    # X = [[-1, c], [1, c]], Y = [[1, -1], [-1, 1]], X^T X = diag(2, 2c^2), X^T Y = [[-2, 2], [0, 0]]
    # -> W = [[-2 / (2 + l2), 2 / (2 + l2)], [0, 0]]
    l2 = 0.5
    classifier = fit_least_squares(np.array([[-1.0], [1.0]]), np.array([0, 1]), num_classes=2, l2_reg=l2)
    np.testing.assert_allclose(classifier.mean, [0.0])
    np.testing.assert_allclose(classifier.std, [1.0 + 1e-5])
    scale = 1 / (1 + 1e-5)  # the standardised features are +-1 / (1 + 1e-5)
    expected = np.array([[-2 * scale / (2 * scale**2 + l2), 2 * scale / (2 * scale**2 + l2)], [0.0, 0.0]])
    np.testing.assert_allclose(classifier.weights, expected, atol=1e-12)
    assert list(classifier.predict(np.array([[0.5], [-3.0]]))) == [1, 0]


@pytest.mark.parametrize("n", [6, 40])  # fewer examples than features (dual system) and more (primal system)
def test_least_squares_matches_ridge_regression_to_plus_minus_one(n):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(n)
    features = rng.normal(size=(n, 12)) * rng.uniform(0.5, 3.0, size=12) + rng.normal(size=12)
    labels = rng.integers(0, 3, size=n)
    classifier = fit_least_squares(features, labels, num_classes=3, l2_reg=2.0)
    x = (features - features.mean(0)) / (features.std(0) + 1e-5)
    x = np.concatenate([x, np.full((n, 1), BIAS_CONSTANT)], axis=1)
    y = np.where(np.eye(3)[labels] > 0, 1.0, -1.0)
    ridge = Ridge(alpha=2.0, fit_intercept=False, solver="svd").fit(x, y)
    np.testing.assert_allclose(classifier.weights, ridge.coef_.T, rtol=1e-7, atol=1e-9)


def clusters(per_class: int, num_classes: int = 4, dim: int = 16, spread: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 3
    labels = np.repeat(np.arange(num_classes), per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def test_fewshot_on_separable_clusters_is_perfect_and_on_noise_is_chance():
    train_x, train_y = clusters(30, seed=0)
    test_x, test_y = clusters(25, seed=0)  # same centres, other points
    results = fewshot_accuracy(train_x, train_y, test_x, test_y, shots=(1, 5), num_draws=3)
    assert set(results) == {1, 5}
    assert results[5].mean == 1.0 and results[1].mean == 1.0
    assert len(results[5].accuracies) == 3
    rng = np.random.default_rng(1)
    noise = fewshot_accuracy(rng.normal(size=(200, 16)), rng.integers(0, 4, 200), rng.normal(size=(400, 16)),
                             rng.integers(0, 4, 400), shots=(10,), num_draws=4)
    assert 0.1 < noise[10].mean < 0.4  # chance is 0.25


def test_fewshot_draws_are_random_per_draw_and_fixed_by_the_seed():
    labels = np.repeat(np.arange(3), 10)
    rng = np.random.default_rng(0)
    first, second = draw_shots(labels, 4, rng, range(3)), draw_shots(labels, 4, rng, range(3))
    assert len(first) == 12 and np.bincount(labels[first]).tolist() == [4, 4, 4]
    assert len(set(first)) == 12 and not np.array_equal(first, second)
    train_x, train_y = clusters(10, spread=3.0, seed=2)
    test_x, test_y = clusters(20, spread=3.0, seed=3)
    a = fewshot_accuracy(train_x, train_y, test_x, test_y, shots=(2,), num_draws=5, seed=7)[2]
    b = fewshot_accuracy(train_x, train_y, test_x, test_y, shots=(2,), num_draws=5, seed=7)[2]
    assert a.accuracies == b.accuracies
    assert len(set(a.accuracies)) > 1  # hard data: different draws, different accuracies
    assert a.mean == pytest.approx(np.mean(a.accuracies)) and a.std == pytest.approx(np.std(a.accuracies))
    with pytest.raises(ValueError, match="needs 11 training examples of class 0, found 10"):
        fewshot_accuracy(train_x, train_y, test_x, test_y, shots=(11,))


def test_linear_probe_separates_what_is_linearly_separable():
    train_x, train_y = clusters(20, seed=4)
    test_x, test_y = clusters(20, seed=4)
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y) == 1.0


def test_fewshot_evaluate_on_model_features():
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=8, patch_size=4, width=16, depth=1,
                                num_heads=2, mlp_dim=16)
    gen = torch.Generator().manual_seed(0)
    # three classes of images that differ by their mean colour: separable even for a random model
    images = torch.randn(36, 3, 8, 8, generator=gen) * 0.1 + torch.repeat_interleave(torch.tensor(
        [[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), 12, dim=0)[:, :, None, None]
    labels = torch.arange(3).repeat_interleave(12)
    batches = [(images[i:i + 10], labels[i:i + 10]) for i in range(0, 36, 10)]
    features, got_labels = extract_features(model, batches)
    assert features.shape == (36, 16) and got_labels.tolist() == labels.tolist()
    with torch.no_grad():
        np.testing.assert_allclose(features, model.forward_head(model.forward_features(images), pre_logits=True),
                                   atol=1e-5)
    results = fewshot_evaluate(model, batches, batches, shots=(1, 5), num_draws=2)
    assert results["fewshot"][5].mean == 1.0 and results["linear_probe"] == 1.0
    report = format_results(results)
    assert "5-shot linear accuracy:    100.00%" in report and "linear probe accuracy:     100.00%" in report


def test_parse_shots():
    assert parse_shots("1,5,10,25") == [1, 5, 10, 25]
    for bad in ("", "a,b", "0,5", "-1"):
        with pytest.raises(ValueError, match="--few-shot"):
            parse_shots(bad)


def test_eval_command_few_shot_flag(tmp_path, capsys):
    import json

    from vitkit.cli import main

    model = vitkit.create_model("ViT-Ti/16", num_classes=10, image_size=8, patch_size=4, width=16, depth=1,
                                num_heads=2, mlp_dim=16)
    model.class_names = [str(d) for d in range(10)]
    vitkit.save(model, tmp_path / "digits.safetensors")
    code = main(["eval", "--checkpoint", str(tmp_path / "digits.safetensors"), "--data", "digits", "--few-shot",
                 "1,5", "--few-shot-draws", "2", "--out", str(tmp_path / "eval"), "--no-progress",
                 "--num-workers", "0", "--limit-per-class", "10"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "1-shot linear accuracy" in printed and "5-shot linear accuracy" in printed and "linear probe" in printed
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(report["few_shot"]) == {"1", "5"} and len(report["few_shot"]["5"]["draws"]) == 2
    assert 0.1 < report["linear_probe"] <= 1.0  # a random tiny model's features still beat chance on digits
    bad = main(["eval", "--checkpoint", str(tmp_path / "digits.safetensors"), "--data", "digits", "--few-shot",
                "0,5", "--out", str(tmp_path / "eval")])
    assert bad == 2 and "--few-shot" in capsys.readouterr().err
