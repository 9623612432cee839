"""SNGAN-style residual bodies (Miyato et al. 2018, after Gulrajani et al. 2017's ResNet)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from models.spec import ResNetArchitecture
from worker.gan.networks.common import Norm, glorot, norm2d, reinit, reset_norms, sn, weight_layers

RESIDUAL_GAIN = math.sqrt(2)


class GeneratorBlock(nn.Module):
    """BN-ReLU-upsample-conv-BN-ReLU-conv, with an upsampled 1×1 shortcut."""

    def __init__(self, in_ch: int, out_ch: int, norm: Norm) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            norm2d(norm, in_ch),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(in_ch, out_ch, 3, 1, 1),
            norm2d(norm, out_ch),
            nn.ReLU(),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1),
        )
        self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(in_ch, out_ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.residual(x) + self.shortcut(x)
        return out


class DiscriminatorBlock(nn.Module):
    """(ReLU)-conv-ReLU-conv-(avgpool), 1×1 shortcut; the first block skips the leading ReLU."""

    def __init__(self, in_ch: int, out_ch: int, down: bool, first: bool, spectral: bool, norm: Norm) -> None:
        super().__init__()
        pool: nn.Module = nn.AvgPool2d(2) if down else nn.Identity()
        self.residual = nn.Sequential(
            nn.Identity() if first else nn.ReLU(),
            sn(nn.Conv2d(in_ch, out_ch, 3, 1, 1), spectral),
            norm2d(norm, out_ch),
            nn.ReLU(),
            sn(nn.Conv2d(out_ch, out_ch, 3, 1, 1), spectral),
            pool,
        )
        learn = in_ch != out_ch or down
        conv: nn.Module = sn(nn.Conv2d(in_ch, out_ch, 1), spectral) if learn else nn.Identity()
        # The first block pools before its shortcut conv, the others after (as in SNGAN).
        self.shortcut = nn.Sequential(pool, conv) if first else nn.Sequential(conv, pool)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.residual(x) + self.shortcut(x)
        return out


class _SumPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x).sum(dim=(2, 3))


def _size(shape: tuple[int, ...]) -> int:
    size = shape[-1]
    if size not in (16, 32, 64):
        raise ValueError(f"resnet needs 16, 32 or 64 px square images, got {size}")
    return size


def generator_body(arch: ResNetArchitecture, in_dim: int, shape: tuple[int, ...], norm: Norm = "batch") -> nn.Module:
    width = arch.base_channels
    ups = int(math.log2(_size(shape))) - 2
    return nn.Sequential(
        nn.Linear(in_dim, width * 4 * 4),
        nn.Unflatten(1, (width, 4, 4)),
        *[GeneratorBlock(width, width, norm) for _ in range(ups)],
        norm2d(norm, width),
        nn.ReLU(),
        nn.Conv2d(width, shape[0], 3, 1, 1),
        nn.Tanh(),
    )


def discriminator_body(
    arch: ResNetArchitecture, in_shape: tuple[int, ...], norm: Norm = "none"
) -> tuple[nn.Module, int]:
    # SNGAN's critic has no normalisation layers (spectral norm only); `norm` applies only if asked for.
    norm = "none" if norm == "batch" else norm
    width, size, spectral = arch.base_channels, _size(in_shape), arch.spectral_norm
    blocks: list[nn.Module] = [DiscriminatorBlock(in_shape[0], width, True, True, spectral, norm)]
    size //= 2
    while size > 8:
        blocks.append(DiscriminatorBlock(width, width, True, False, spectral, norm))
        size //= 2
    blocks.append(DiscriminatorBlock(width, width, False, False, spectral, norm))
    return nn.Sequential(*blocks, _SumPool()), width


def initialise(net: nn.Module) -> None:
    """As pfnet-research/sngan_projection (gen_models/ and dis_models/resblocks.py, resnet_*.py):
    Glorot uniform with gain √2 for the two convolutions of every residual branch, gain 1 for
    everything else (1×1 shortcuts, G's input linear and output conv, D's linear head, projection
    embedding and Q head); biases 0; norm layers weight 1, bias 0 (Chainer's defaults)."""
    residual = {
        id(layer)
        for block in net.modules()
        if isinstance(block, GeneratorBlock | DiscriminatorBlock)
        for layer in weight_layers(block.residual)
    }
    for layer in weight_layers(net):
        reinit(layer, glorot(RESIDUAL_GAIN if id(layer) in residual else 1.0))
    reset_norms(net)
