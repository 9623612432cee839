"""Bare training loops in plain PyTorch, written as the papers' code is: the baseline of bench/trainer_overhead.py
and bench/gpu_bench.py.

    step = bare_step(spec, gan, x, device)   # one generator step (and its critic steps) on the very same nets
    step()

A few lines per loss: nsgan as the PyTorch DCGAN example (github.com/pytorch/examples, dcgan/main.py) with fresh
noise for G's step as the papers do; wgan-gp as Gulrajani et al.'s code (igul222/improved_wgan_training,
gan_toy.py / gan_64x64.py: 5 critic steps, ε per sample, D's parameters frozen for G's step "to avoid
computation"). torch.optim.Adam with its defaults for the device (no fused kernel asked for), nothing logged,
no diagnostics, no EMA. With `bf16` the forwards run under autocast and the losses and the penalty take float32
scores (the recipe the trainer uses, GAN_REFERENCE.md). `gan` only lends its networks (built by
worker/gan/factory.py, so both sides start from the same weights) in their memory format (`gan.channels_last`:
the factory's NHWC for convolutional nets; bench/trainer_overhead.py gives its CPU baseline NCHW, the papers').
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models.spec import JobSpec
from worker.gan import GAN


def bare_step(spec: JobSpec, gan: GAN, x: Tensor, device: torch.device, bf16: bool = False) -> Callable[[], None]:
    """One training step of `spec.loss` (nsgan or wgan-gp) on `gan`'s networks, batches drawn from `x` (on device)."""
    g, d, loss = gan.generator, gan.discriminator, spec.loss
    batch, latent = spec.training.batch_size, spec.architecture.latent_dim
    channels_last = gan.channels_last

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def sample() -> Tensor:
        real = x[torch.randint(len(x), (batch,), device=device)]
        return real.contiguous(memory_format=torch.channels_last) if channels_last else real

    def noise() -> Tensor:
        return torch.randn(batch, latent, device=device)

    opt_g = torch.optim.Adam(g.parameters(), lr=loss.lr_g, betas=tuple(loss.betas))
    opt_d = torch.optim.Adam(d.parameters(), lr=loss.lr_d, betas=tuple(loss.betas))

    if loss.name == "nsgan":

        def nsgan() -> None:
            real = sample()
            with torch.no_grad(), autocast():
                fake = g(noise())
            with autocast():
                out_real, out_fake = d(real).score, d(fake).score
            loss_d = F.softplus(-out_real.float()).mean() + F.softplus(out_fake.float()).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            with autocast():
                out = d(g(noise())).score
            loss_g = F.softplus(-out.float()).mean()
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()

        return nsgan

    if loss.name != "wgan-gp":
        raise ValueError(f"no bare loop for {loss.name}: nsgan or wgan-gp")
    weight = gan.objective.penalty_weight

    def wgan_gp() -> None:
        for p in d.parameters():
            p.requires_grad = True
        for _ in range(loss.n_critic):
            real = sample()
            with torch.no_grad(), autocast():
                fake = g(noise())
            eps = torch.rand(batch, *([1] * (real.dim() - 1)), device=device)
            x_hat = (eps * real + (1 - eps) * fake.float()).requires_grad_(True)
            with autocast():
                out_hat = d(x_hat).score
            (grad,) = torch.autograd.grad(out_hat.float().sum(), x_hat, create_graph=True)
            penalty = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
            with autocast():
                out_real, out_fake = d(real).score, d(fake).score
            loss_d = out_fake.float().mean() - out_real.float().mean() + weight * penalty
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        for p in d.parameters():
            p.requires_grad = False
        with autocast():
            out = d(g(noise())).score
        loss_g = -out.float().mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return wgan_gp
