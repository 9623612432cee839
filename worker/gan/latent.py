"""The generator's inputs: latent z ~ N(0, I), class labels (cgan), InfoGAN codes; and the MI term on them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from worker.gan import losses

Inputs = dict[str, Tensor]


@dataclass(frozen=True)
class LatentSpace:
    latent_dim: int
    num_classes: int = 0  # cgan: labels uniform over the classes
    categorical_codes: tuple[int, ...] = ()  # infogan: c_i ~ U{0..K_i−1}
    continuous_codes: int = 0  # infogan: c ~ U[−1, 1], as in the official code

    def sample(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> Inputs:
        """A random batch of generator inputs (from `generator`'s stream when given, else the global one)."""
        inputs = {"z": torch.randn(n, self.latent_dim, device=device, generator=generator)}
        if self.num_classes:
            inputs["labels"] = torch.randint(self.num_classes, (n,), device=device, generator=generator)
        if self.categorical_codes:
            inputs["categorical"] = torch.stack(
                [torch.randint(k, (n,), device=device, generator=generator) for k in self.categorical_codes], dim=1
            )
        if self.continuous_codes:
            inputs["continuous"] = torch.rand(n, self.continuous_codes, device=device, generator=generator) * 2 - 1
        return inputs

    def fixed(self, n: int, generator: torch.Generator, device: torch.device) -> Inputs:
        """Snapshot inputs: random z (and other codes) from `generator` on the CPU; label / first code = i mod K."""
        inputs = self.sample(n, torch.device("cpu"), generator)
        if self.num_classes:
            inputs["labels"] = torch.arange(n) % self.num_classes
        if self.categorical_codes:
            inputs["categorical"][:, 0] = torch.arange(n) % self.categorical_codes[0]
        return {name: tensor.to(device) for name, tensor in inputs.items()}

    def code_entropy(self) -> float:
        """H(c) of the code prior: Σ log K_i for categorical codes plus log 2 per U[−1, 1] code."""
        return sum(math.log(k) for k in self.categorical_codes) + self.continuous_codes * math.log(2.0)

    def code_nll(self, q: tuple[list[Tensor], Tensor], inputs: Inputs, std: float) -> Tensor:
        """−E log Q(c | G(z, c)) summed over the codes (cross-entropy on Q's logits; Gaussian NLL)."""
        logits, means = q
        nll = torch.zeros((), device=means.device)
        for i, code_logits in enumerate(logits):
            nll = nll + losses.categorical_code_nll(code_logits, inputs["categorical"][:, i])
        if self.continuous_codes:
            nll = nll + losses.gaussian_code_nll(means, inputs["continuous"], std)
        return nll
