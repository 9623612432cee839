"""Radford et al. 2015 DCGAN bodies for 16, 32 and 64 px images (strided 4×4 convolutions)."""

from __future__ import annotations

import math

from torch import nn

from models.spec import DCGANArchitecture
from worker.gan.networks.common import Norm, norm2d, reinit, reset_norms, weight_layers

INIT_STD = 0.02


def _doublings(size: int) -> int:
    if size not in (16, 32, 64):
        raise ValueError(f"dcgan needs 16, 32 or 64 px square images, got {size}")
    return int(math.log2(size)) - 2  # from 4×4 to size×size


def generator_body(arch: DCGANArchitecture, in_dim: int, shape: tuple[int, ...], norm: Norm = "batch") -> nn.Module:
    channels, size = shape[0], shape[-1]
    ups = _doublings(size)
    width = arch.base_channels * 2 ** (ups - 1)
    layers: list[nn.Module] = [
        nn.Unflatten(1, (in_dim, 1, 1)),
        nn.ConvTranspose2d(in_dim, width, 4, 1, 0, bias=norm == "none"),
        norm2d(norm, width),
        nn.ReLU(),
    ]
    for _ in range(ups - 1):
        layers += [
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=norm == "none"),
            norm2d(norm, width // 2),
            nn.ReLU(),
        ]
        width //= 2
    layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
    return nn.Sequential(*layers)


def discriminator_body(
    arch: DCGANArchitecture, in_shape: tuple[int, ...], norm: Norm = "batch"
) -> tuple[nn.Module, int]:
    channels, size = in_shape[0], in_shape[-1]
    downs = _doublings(size)
    width = arch.base_channels
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
    for _ in range(downs - 1):
        layers += [
            nn.Conv2d(width, width * 2, 4, 2, 1, bias=norm == "none"),
            norm2d(norm, width * 2),
            nn.LeakyReLU(0.2),
        ]
        width *= 2
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), width * 4 * 4


def initialise(net: nn.Module) -> None:
    """Radford et al. 2015 (1511.06434, §4): every conv, transposed conv, linear and embedding weight
    N(0, 0.02²), biases 0; batch-norm (and the layer norm that replaces it in a penalised critic)
    weights N(1, 0.02²), biases 0, as the official code (Newmu/dcgan_code) draws its BN gains."""
    for layer in weight_layers(net):
        reinit(layer, lambda w: nn.init.normal_(w, 0.0, INIT_STD))
    reset_norms(net, INIT_STD)
