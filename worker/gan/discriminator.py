"""Discriminators: one wrapper adds packing, label conditioning and the InfoGAN Q head to any body;
BEGAN's auto-encoder discriminator pairs a discriminator body with a generator body."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.gan import losses
from worker.gan.networks.common import sn

Q_HIDDEN = 128


class DOutput(NamedTuple):
    score: Tensor  # one per critic input: logit, critic value, or BEGAN's reconstruction error
    features: Tensor  # the shared body's output (InfoGAN's Q head reads it)


class QHead(nn.Module):
    """Q(c|x) on D's features: logits per categorical code, means of the continuous codes (fixed std)."""

    def __init__(self, features: int, categorical_codes: tuple[int, ...], continuous_codes: int) -> None:
        super().__init__()
        self.categorical_codes = categorical_codes
        self.net = nn.Sequential(
            nn.Linear(features, Q_HIDDEN),
            nn.LeakyReLU(0.2),
            nn.Linear(Q_HIDDEN, sum(categorical_codes) + continuous_codes),
        )

    def forward(self, features: Tensor) -> tuple[list[Tensor], Tensor]:
        out = self.net(features)
        split = sum(self.categorical_codes)
        return list(out[:, :split].split(list(self.categorical_codes), dim=1)), out[:, split:]


def one_hot_channels(labels: Tensor, num_classes: int, like: Tensor) -> Tensor:
    """Labels as one-hot features (points) or constant one-hot planes (images), to concatenate to x."""
    onehot = F.one_hot(labels, num_classes).to(like.dtype)
    if like.dim() > 2:
        onehot = onehot[:, :, None, None].expand(-1, -1, *like.shape[2:])
    return onehot


class Discriminator(nn.Module):
    """D(x | y): body → linear head, with optional packing, conditioning and Q head.

    pack > 1 (PacGAN): `pack` consecutive samples are concatenated along the first
    non-batch dim (features of points, channels of images) into one critic input.
    conditioning "concat" appends the one-hot label to each sample before the body;
    "projection" adds ⟨embed(y), φ(x)⟩ to the head (summed over a pack's labels).
    """

    def __init__(
        self,
        body: nn.Module,
        features: int,
        pack: int = 1,
        num_classes: int = 0,
        conditioning: str | None = None,
        q_head: QHead | None = None,
        spectral: bool = False,
    ) -> None:
        super().__init__()
        self.body = body
        self.pack = pack
        self.num_classes = num_classes
        self.conditioning = conditioning if num_classes else None
        self.head = sn(nn.Linear(features, 1), spectral)
        self.projection = (
            sn(nn.Embedding(num_classes, features), spectral) if self.conditioning == "projection" else None
        )
        self.q_head = q_head

    def forward(self, x: Tensor, labels: Tensor | None = None) -> DOutput:
        if self.conditioning == "concat":
            assert labels is not None, "a conditional discriminator needs labels"
            x = torch.cat([x, one_hot_channels(labels, self.num_classes, x)], dim=1)
        if self.pack > 1:
            x = x.reshape(x.shape[0] // self.pack, self.pack * x.shape[1], *x.shape[2:])
        features = self.body(x)
        score = self.head(features).squeeze(1)
        if self.projection is not None:
            assert labels is not None, "a conditional discriminator needs labels"
            embedded = self.projection(labels).reshape(features.shape[0], self.pack, -1).sum(1)
            score = score + (embedded * features).sum(1)
        return DOutput(score, features)


class AutoEncoderDiscriminator(nn.Module):
    """BEGAN's D: encoder (a discriminator body) → bottleneck → decoder (a generator body); score = L(v)."""

    def __init__(self, encoder: nn.Module, features: int, bottleneck: int, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.bottleneck = nn.Linear(features, bottleneck)
        self.decoder = decoder
        self.q_head = None

    def forward(self, x: Tensor, labels: Tensor | None = None) -> DOutput:  # noqa: ARG002 - every D takes labels
        code = self.bottleneck(self.encoder(x))
        return DOutput(losses.reconstruction_error(x, self.decoder(code)), code)
