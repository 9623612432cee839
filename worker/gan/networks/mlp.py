"""Fully connected bodies for points and rows (images are flattened): no normalisation layers."""

from __future__ import annotations

import math

from torch import nn

from models.spec import MLPArchitecture
from worker.gan.networks.common import Norm, sn


def generator_body(arch: MLPArchitecture, in_dim: int, shape: tuple[int, ...], norm: Norm = "none") -> nn.Module:  # noqa: ARG001 - the builders share one signature; the MLP has no norm layers
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(arch.depth):
        layers += [nn.Linear(width, arch.hidden), nn.ReLU()]
        width = arch.hidden
    layers += [nn.Linear(width, math.prod(shape)), nn.Unflatten(1, shape)]
    return nn.Sequential(*layers)


def discriminator_body(arch: MLPArchitecture, in_shape: tuple[int, ...], norm: Norm = "none") -> tuple[nn.Module, int]:  # noqa: ARG001 - as above
    # No batch norm: the MLP critic serves every loss, gradient penalties included.
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(in_shape)
    for _ in range(arch.depth):
        layers += [sn(nn.Linear(width, arch.hidden), arch.spectral_norm), nn.LeakyReLU(0.2)]
        width = arch.hidden
    return nn.Sequential(*layers), width


def initialise(net: nn.Module) -> None:
    """Keeps PyTorch's defaults: nn.Linear weights and biases U(±1/√fan_in), embeddings N(0, 1).

    The MLP has no paper of its own. The WGAN-GP toy code's init (He uniform into each ReLU,
    Glorot uniform for output layers, biases 0; igul222/improved_wgan_training gan_toy.py),
    whose 3×512 shape this MLP follows, was tried and measured worse here: nsgan on grid25,
    5k steps, seed 0, ended 17/25 modes with 8.9 % HQ against 23/25 with 67.9 % under
    PyTorch's default (bench/ZOO_RESULTS.md); minimax 21/25, 7.9 % HQ with it.
    """
