"""Small layers shared by the architectures."""

from __future__ import annotations

from typing import Literal

from torch import nn
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
