"""Fully connected bodies for points and rows (images are flattened): no normalisation layers."""

from __future__ import annotations

import math
from itertools import pairwise

from torch import nn

from models.spec import MLPArchitecture
from worker.gan.networks.common import Norm, glorot, he_uniform, reinit, sn, weight_layers


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


def initialise(net: nn.Module) -> None:
    """As the WGAN-GP toy code (igul222/improved_wgan_training gan_toy.py with tflib's linear), whose
    width and depth this MLP follows: He uniform (std √(2/fan_in)) for every linear layer that feeds
    a (leaky) ReLU, Glorot uniform for the others (G's output layer, D's head, BEGAN's bottleneck,
    Q's output), biases 0. PyTorch's default, U(±1/√fan_in), would shrink the activations' scale
    by √6 at every ReLU layer; He's keeps it."""
    feeds_relu: set[int] = set()
    for sequence in net.modules():
        if isinstance(sequence, nn.Sequential):
            pairs = pairwise(sequence)
            feeds_relu.update(id(layer) for layer, after in pairs if isinstance(after, nn.ReLU | nn.LeakyReLU))
    for layer in weight_layers(net):
        reinit(layer, he_uniform if id(layer) in feeds_relu else glorot())
