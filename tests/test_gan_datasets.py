"""Built-in data sets: exactly the PacGAN mixtures, fixed across loads, digits scaled and resized."""

from __future__ import annotations

import math

import pytest
import torch

from models.datasets import BUILTIN_DATASETS
from worker.gan import load_builtin
from worker.gan.datasets import resize_images


@pytest.mark.parametrize(
    "name,centers,std",
    [
        ("ring8", [(math.cos(2 * math.pi * i / 8), math.sin(2 * math.pi * i / 8)) for i in range(8)], 0.01),
        ("grid25", [(a, b) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)], 0.05),
    ],
)
def test_mixtures_are_the_pacgan_modes_with_each_point_labelled_by_its_mode(
    name: str, centers: list[tuple[float, float]], std: float
) -> None:
    data = load_builtin(name)
    assert data.x.shape == (100_000, 2) and data.x.dtype == torch.float32
    assert data.y is not None and data.y.dtype == torch.int64
    assert data.info == BUILTIN_DATASETS[name]
    modes = torch.tensor(centers, dtype=torch.float32)
    offsets = data.x - modes[data.y]
    assert offsets.std(0).tolist() == pytest.approx([std, std], rel=0.02)
    assert offsets.mean(0).abs().max() < 3 * std / math.sqrt(len(data.x) / len(centers))
    counts = torch.bincount(data.y, minlength=len(centers)).float()
    assert counts.min() > 0.9 * counts.mean()  # modes are equally likely
    nearest = torch.cdist(data.x, modes).argmin(1)
    assert torch.equal(nearest, data.y)


def test_points_are_fixed_across_loads() -> None:
    assert torch.equal(load_builtin("ring8").x, load_builtin("ring8").x)
    assert not torch.equal(load_builtin("ring8").x[:10], load_builtin("grid25").x[:10])


def test_spiral_is_unlabelled_points() -> None:
    data = load_builtin("spiral")
    assert data.x.shape == (100_000, 2) and data.y is None
    assert torch.isfinite(data.x).all() and data.x.abs().max() < 5


def test_digits_are_scaled_to_minus_one_one_and_labelled() -> None:
    data = load_builtin("digits")
    assert data.x.shape == (1797, 1, 8, 8) and data.x.dtype == torch.float32
    assert float(data.x.min()) == -1.0 and float(data.x.max()) == 1.0
    assert data.y is not None and sorted(set(data.y.tolist())) == list(range(10))
    assert data.info.shape == (1, 8, 8)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_digits_resize_by_bilinear_interpolation_and_report_the_new_shape(size: int) -> None:
    data = load_builtin("digits", size)
    assert data.x.shape == (1797, 1, size, size)
    assert data.info.shape == (1, size, size) and data.info.num_classes == 10
    assert -1.0 <= float(data.x.min()) and float(data.x.max()) <= 1.0
    expected = torch.nn.functional.interpolate(load_builtin("digits").x, size=(size, size), mode="bilinear")
    assert torch.allclose(data.x, expected.clamp(-1, 1))


def test_resize_keeps_a_matching_size_and_points_refuse_resize() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert resize_images(x, 16) is x
    with pytest.raises(ValueError, match="image"):
        load_builtin("ring8", 16)
    with pytest.raises(ValueError, match="unknown"):
        load_builtin("mnist")
