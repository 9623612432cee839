"""The PacGAN 2-D protocol and the classifier-based image scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from worker.gan import evaluate_points, load_builtin
from worker.gan.classifier import DigitClassifier, class_accuracy, code_purity, frechet_distance, train_classifier
from worker.gan.datasets import grid25_centers, ring8_centers


def test_real_data_covers_every_mode_with_high_quality() -> None:
    for name, modes in (("ring8", 8), ("grid25", 25)):
        result = evaluate_points(load_builtin(name).x[:2500].numpy(), name)
        assert result is not None
        assert result["modes_covered"] == modes
        assert result["hq_fraction"] > 0.98  # 3σ in 2-D holds 98.9 %
        assert result["reverse_kl"] < 0.02


def test_hand_made_samples() -> None:
    centers = ring8_centers()
    # 3 samples at mode 0 (one of them 2σ off), 1 at mode 1 but 4σ off (low quality), none elsewhere
    samples = np.array([centers[0], centers[0] + [0.02, 0], centers[0], centers[1] + [0.04, 0]])
    result = evaluate_points(samples, "ring8")
    assert result == {
        "modes_covered": 1.0,
        "hq_fraction": 0.75,
        "reverse_kl": pytest.approx(math.log(8)),  # the HQ histogram: all three in mode 0
        "reverse_kl_all": pytest.approx(0.75 * math.log(0.75 * 8) + 0.25 * math.log(0.25 * 8)),
    }


def test_reverse_kl_counts_high_quality_samples_only_as_pacgans_histogram() -> None:
    centers = ring8_centers()  # σ = 0.01
    hq = [centers[0]] * 4 + [centers[1] + [0.0, 0.02]] * 4  # 2σ off: still HQ
    lq = [centers[2] + [0.04, 0.0]] * 8  # 4σ off: nearest mode 2, low quality
    result = evaluate_points(np.array(hq + lq), "ring8")
    assert result is not None
    assert result["modes_covered"] == 2 and result["hq_fraction"] == 0.5
    # HQ histogram (4, 4, 0, …) / 8 → 2 · ½ log(½ · 8) = log 4
    assert result["reverse_kl"] == pytest.approx(math.log(4))
    # all samples (4, 4, 8, 0, …) / 16 → 2 · ¼ log(¼ · 8) + ½ log(½ · 8) = 1.5 log 2
    assert result["reverse_kl_all"] == pytest.approx(1.5 * math.log(2))


def test_reverse_kl_is_zero_for_uniform_hq_samples_however_the_rest_falls() -> None:
    centers = grid25_centers()  # σ = 0.05
    far = np.repeat([[-4.5, -4.5]], 25, axis=0)  # 14σ from (−4, −4): low quality, nearest that mode
    result = evaluate_points(np.concatenate([centers, far]), "grid25")
    assert result is not None
    assert result["modes_covered"] == 25 and result["hq_fraction"] == 0.5
    assert result["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    # all samples: 26 of 50 at (−4, −4), 1 of 50 at each other mode
    assert result["reverse_kl_all"] == pytest.approx(0.52 * math.log(0.52 * 25) + 24 * 0.02 * math.log(0.02 * 25))


def test_reverse_kl_without_hq_samples_is_log_k_and_non_finite_samples_count_in_neither() -> None:
    centers = ring8_centers()
    samples = np.array([centers[3] + [0.05, 0.0], centers[5] + [0.0, 0.05], [np.inf, 0.0], [np.nan, np.nan]])
    result = evaluate_points(samples, "ring8")
    assert result is not None
    assert result["modes_covered"] == 0 and result["hq_fraction"] == 0.0
    assert result["reverse_kl"] == pytest.approx(math.log(8))  # no HQ sample: no better than total collapse
    assert result["reverse_kl_all"] == pytest.approx(math.log(4))  # the two finite ones: modes 3 and 5, ½ each


def test_collapse_to_one_mode_has_reverse_kl_log_k() -> None:
    samples = np.repeat(grid25_centers()[7:8], 2500, axis=0)
    result = evaluate_points(samples, "grid25")
    assert result is not None
    assert result["modes_covered"] == 1 and result["hq_fraction"] == 1.0
    assert result["reverse_kl"] == pytest.approx(math.log(25))
    assert result["reverse_kl_all"] == pytest.approx(math.log(25))


def test_far_and_non_finite_samples_are_low_quality() -> None:
    samples = np.array([[10.0, 10.0], [np.nan, 0.0], [0.0, 0.0]])
    result = evaluate_points(samples, "grid25")
    assert result is not None
    assert result["hq_fraction"] == pytest.approx(1 / 3) and result["modes_covered"] == 1


def test_other_data_sets_have_no_points_protocol() -> None:
    assert evaluate_points(np.zeros((10, 2)), "spiral") is None
    assert evaluate_points(np.zeros((10, 2)), "") is None


class FixedClassifier(DigitClassifier):
    """Predicts the class written in pixel (0, 0) of each image."""

    def __init__(self) -> None:
        super().__init__(1, 8, 10)

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 10).float()


def test_class_accuracy_and_code_purity_by_hand() -> None:
    predicted = torch.tensor([3, 3, 5, 1, 1, 1])
    images = torch.zeros(6, 1, 8, 8)
    images[:, 0, 0, 0] = predicted.float()
    model = FixedClassifier()
    assert class_accuracy(model, images, torch.tensor([3, 4, 5, 1, 1, 2])) == pytest.approx(4 / 6)
    # code 0 -> classes {3, 3, 5}: majority 2; code 1 -> {1, 1, 1}: majority 3
    assert code_purity(model, images, torch.tensor([0, 0, 0, 1, 1, 1]), 10) == pytest.approx(5 / 6)


def test_classifier_learns_digits_and_frechet_separates_real_from_noise() -> None:
    torch.manual_seed(0)
    data = load_builtin("digits")
    assert data.y is not None
    model, accuracy = train_classifier(data.x, data.y, seed=0, epochs=12)
    assert accuracy > 0.9
    same = frechet_distance(model, data.x[:800], data.x[800:1600])
    noise = frechet_distance(model, data.x[:800], torch.rand(800, 1, 8, 8) * 2 - 1)
    assert same < 0.2 * noise
    assert frechet_distance(model, data.x[:500], data.x[:500]) == pytest.approx(0.0, abs=1e-3)
