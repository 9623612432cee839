"""The generator: latent z, plus a label embedding (cgan) or latent codes (infogan), into an architecture's body."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Generator(nn.Module):
    """G(z | y, c): the conditioning is concatenated to z before the body (Mirza & Osindero; Chen et al.)."""

    def __init__(
        self,
        body: nn.Module,
        latent_dim: int,
        num_classes: int = 0,
        label_dim: int = 0,
        categorical_codes: tuple[int, ...] = (),
        continuous_codes: int = 0,
    ) -> None:
        super().__init__()
        self.body = body
        self.latent_dim = latent_dim
        self.categorical_codes = categorical_codes
        self.continuous_codes = continuous_codes
        self.embedding = nn.Embedding(num_classes, label_dim) if num_classes else None

    @staticmethod
    def input_dim(
        latent_dim: int, label_dim: int = 0, categorical_codes: tuple[int, ...] = (), continuous_codes: int = 0
    ) -> int:
        return latent_dim + label_dim + sum(categorical_codes) + continuous_codes

    def forward(
        self,
        z: Tensor,
        labels: Tensor | None = None,
        categorical: Tensor | None = None,
        continuous: Tensor | None = None,
    ) -> Tensor:
        parts = [z]
        if self.embedding is not None:
            assert labels is not None, "a conditional generator needs labels"
            parts.append(self.embedding(labels))
        if self.categorical_codes:
            assert categorical is not None, "an InfoGAN generator needs its categorical codes"
            parts += [F.one_hot(categorical[:, i], k).to(z.dtype) for i, k in enumerate(self.categorical_codes)]
        if self.continuous_codes:
            assert continuous is not None, "an InfoGAN generator needs its continuous codes"
            parts.append(continuous)
        out: Tensor = self.body(torch.cat(parts, dim=1) if len(parts) > 1 else z)
        return out
