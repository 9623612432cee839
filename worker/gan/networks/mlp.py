"""Fully connected bodies for points and rows (images are flattened): no normalisation layers."""

from __future__ import annotations

import math

from torch import nn

from models.spec import MLPArchitecture
from worker.gan.networks.common import Norm, sn


def generator_body(arch: MLPArchitecture, in_dim: int, shape: tuple[int, ...], norm: Norm = "none") -> nn.Module:
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(arch.depth):
        layers += [nn.Linear(width, arch.hidden), nn.ReLU()]
        width = arch.hidden
    layers += [nn.Linear(width, math.prod(shape)), nn.Unflatten(1, shape)]
    return nn.Sequential(*layers)


def discriminator_body(arch: MLPArchitecture, in_shape: tuple[int, ...], norm: Norm = "none") -> tuple[nn.Module, int]:
    # No batch norm: the MLP critic serves every loss, gradient penalties included.
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(in_shape)
    for _ in range(arch.depth):
        layers += [sn(nn.Linear(width, arch.hidden), arch.spectral_norm), nn.LeakyReLU(0.2)]
        width = arch.hidden
    return nn.Sequential(*layers), width
