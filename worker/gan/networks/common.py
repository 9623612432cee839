"""Small layers shared by the architectures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

Norm = Literal["batch", "layer", "none"]


def norm2d(kind: Norm, channels: int) -> nn.Module:
    """Batch norm, layer norm over (C, H, W) with per-channel affine (GroupNorm with one group), or nothing."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) when enabled."""
    return spectral_norm(module) if enabled else module


WEIGHT_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)
NORM_LAYERS = (nn.BatchNorm2d, nn.GroupNorm)


def reset_norms(net: nn.Module, weight_std: float = 0.0) -> None:
    """Affine norm layers to weight N(1, weight_std²) (exactly 1 at std 0) and bias 0."""
    for m in net.modules():
        if isinstance(m, NORM_LAYERS) and m.affine:
            nn.init.normal_(m.weight, 1.0, weight_std)
            nn.init.zeros_(m.bias)


def weight_layers(net: nn.Module) -> Iterator[nn.Module]:
    """Every linear, convolution and embedding layer of `net` (spectrally normalised ones too)."""
    return (m for m in net.modules() if isinstance(m, WEIGHT_LAYERS))


def reinit(layer: nn.Module, init: Callable[[Tensor], object]) -> None:
    """Draw `layer`'s weight with `init` and zero its bias, in place.

    A spectrally normalised layer is re-initialised under its parametrisation and the
    parametrisation registered again, so its power-iteration vectors (u, v) fit the new weight.
    """
    spectral = parametrize.is_parametrized(layer, "weight")
    if spectral:
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    with torch.no_grad():
        init(layer.weight)  # type: ignore[arg-type]
        bias = getattr(layer, "bias", None)
        if isinstance(bias, Tensor):
            bias.zero_()
    if spectral:
        spectral_norm(layer)


def glorot(gain: float = 1.0) -> Callable[[Tensor], object]:
    """Glorot/Xavier uniform: U(±gain·√(6/(fan_in+fan_out))) (Chainer's GlorotUniform(scale=gain))."""
    return lambda w: nn.init.xavier_uniform_(w, gain=gain)
