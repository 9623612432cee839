"""Every loss as a small pure function of discriminator outputs (StudioGAN style).

`real` and `fake` are D's raw outputs, one per (packed) sample: logits for the
probabilistic losses, critic values for the Wasserstein ones, and for BEGAN the
per-sample reconstruction error L(v) of the auto-encoder discriminator.
Every function returns a 0-d tensor that is *minimised* (GAN_REFERENCE.md).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def d_minimax(real: Tensor, fake: Tensor) -> Tensor:
    """E sp(−D(x)) + E sp(D(x̃)): binary cross-entropy on logits (also NS-GAN's and DRAGAN's D loss)."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_minimax(fake: Tensor) -> Tensor:
    """−E sp(D(x̃)): the saturating generator loss of the original minimax game."""
    return -F.softplus(fake).mean()


def g_nonsaturating(fake: Tensor) -> Tensor:
    """E sp(−D(x̃)): the non-saturating generator loss."""
    return F.softplus(-fake).mean()


def d_least_squares(real: Tensor, fake: Tensor, a: float, b: float) -> Tensor:
    """½E(D(x)−b)² + ½E(D(x̃)−a)²."""
    return 0.5 * (real - b).pow(2).mean() + 0.5 * (fake - a).pow(2).mean()


def g_least_squares(fake: Tensor, c: float) -> Tensor:
    """½E(D(x̃)−c)²."""
    return 0.5 * (fake - c).pow(2).mean()


def d_wasserstein(real: Tensor, fake: Tensor) -> Tensor:
    """E D(x̃) − E D(x): the negated Wasserstein estimate."""
    return fake.mean() - real.mean()


def g_wasserstein(fake: Tensor) -> Tensor:
    """−E D(x̃): the generator loss of WGAN, WGAN-GP and hinge."""
    return -fake.mean()


def d_hinge(real: Tensor, fake: Tensor) -> Tensor:
    """E relu(1 − D(x)) + E relu(1 + D(x̃))."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def reconstruction_error(v: Tensor, reconstruction: Tensor) -> Tensor:
    """BEGAN's L(v) = mean |v − AE(v)|, one value per sample (mean over all non-batch dims)."""
    return (v - reconstruction).abs().flatten(1).mean(1)


def d_began(real: Tensor, fake: Tensor, k: Tensor | float) -> Tensor:
    """L(x) − k_t·L(x̃), with `real`/`fake` the per-sample reconstruction errors."""
    return real.mean() - k * fake.mean()


def g_began(fake: Tensor) -> Tensor:
    """L(x̃)."""
    return fake.mean()


def began_k_update(k: Tensor, loss_real: Tensor, loss_fake: Tensor, gamma: float, lambda_k: float) -> Tensor:
    """k_{t+1} = clip₀¹(k_t + λ_k(γL(x) − L(x̃)))."""
    return (k + lambda_k * (gamma * loss_real - loss_fake)).clamp(0.0, 1.0)


def began_convergence(loss_real: Tensor, loss_fake: Tensor, gamma: float) -> Tensor:
    """M_global = L(x) + |γL(x) − L(x̃)|."""
    return loss_real + (gamma * loss_real - loss_fake).abs()


def categorical_code_nll(logits: Tensor, codes: Tensor) -> Tensor:
    """−E log Q(c|x) for a categorical code: cross-entropy on raw logits (no softmax before it)."""
    return F.cross_entropy(logits, codes)


def gaussian_code_nll(mean: Tensor, codes: Tensor, std: float) -> Tensor:
    """−E log Q(c|x) for continuous codes under a factored Gaussian of fixed `std`, summed over code dims."""
    log_density = -0.5 * ((codes - mean) / std).pow(2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    return -log_density.sum(1).mean()
