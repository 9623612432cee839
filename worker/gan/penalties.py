"""Gradient penalties: WGAN-GP, DRAGAN and R1.

These take double-backward passes, which `torch.compile` does not support:
keep them in eager code. `critic` maps a batch of (unpacked) samples to one
score per critic input; the gradient norm is taken per critic input over all
of its non-batch dims flattened (a packed critic input holds `pack` samples).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Critic = Callable[[Tensor], Tensor]


def per_sample_uniform(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """U[0,1) of shape (B, 1, ..., 1): one value per sample, broadcast over its dims."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return torch.rand(shape, device=x.device, dtype=x.dtype, generator=generator)


def uniform_like(x: Tensor) -> Tensor:
    """U[0,1) per element (DRAGAN's perturbation noise)."""
    return torch.rand_like(x)


def interpolate(real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
    """x̂ = εx + (1−ε)x̃ with ε per sample (WGAN-GP)."""
    return eps * real + (1 - eps) * fake


def dragan_perturb(real: Tensor, scale: float, noise: Tensor, alpha: Tensor) -> Tensor:
    """x̂ = x + α(x_p − x) with x_p = x + scale·std(x)·noise, noise ~ U[0,1) per element, α per sample.

    std(x) is the batch's standard deviation over all elements, as in the official DRAGAN code.
    """
    perturbed = real + scale * real.std() * noise
    return real + alpha * (perturbed - real)


def input_gradient_norms(critic: Critic, points: Tensor, pack: int = 1) -> Tensor:
    """‖∇ₓD(x)‖₂ per critic input, keeping the graph so a penalty on it trains D."""
    points = points.detach().requires_grad_(True)
    scores = critic(points)
    return gradient_norms(scores, points, pack)


def gradient_norms(scores: Tensor, points: Tensor, pack: int = 1) -> Tensor:
    """‖∂scores/∂points‖₂ per critic input (`pack` consecutive samples form one input), flattened."""
    (grad,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    norms: Tensor = grad.reshape(grad.shape[0] // pack, -1).norm(2, dim=1)
    return norms


def norm_penalty(norms: Tensor, target: float) -> Tensor:
    """E(‖∇‖₂ − target)² (WGAN-GP: target 1; DRAGAN: k)."""
    return (norms - target).pow(2).mean()


def r1_penalty(norms: Tensor) -> Tensor:
    """E‖∇ₓD(x)‖² on real data; the caller multiplies by γ/2 (and by the lazy interval)."""
    return norms.pow(2).mean()


def lazy_regularisation_ratio(interval: int) -> float:
    """c = interval/(interval+1): the factor on the lr, and the power on Adam's betas, of an optimiser
    that also takes a regularisation step every `interval` steps (StyleGAN2-ADA training_loop.py's
    `mb_ratio`; Karras et al. 2020, 1912.04958, lazy regularisation). 1.0 for interval 1 (no lazy step)."""
    return interval / (interval + 1) if interval > 1 else 1.0
