"""The one spec-to-networks factory: `build_gan(spec, info, device)`."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from models.admission import check_compatible
from models.datasets import DatasetInfo
from models.spec import JobSpec
from worker.gan.discriminator import AutoEncoderDiscriminator, Discriminator, QHead
from worker.gan.gan import GAN
from worker.gan.generator import Generator
from worker.gan.latent import LatentSpace
from worker.gan.networks import BODIES
from worker.gan.objectives import Objective, objective_from_spec
from worker.gan.penalties import lazy_regularisation_ratio

MIN_LABEL_DIM, MAX_LABEL_DIM = 16, 128
CONVOLUTIONAL = frozenset({"dcgan", "resnet"})


def _label_dim(num_classes: int) -> int:
    return min(MAX_LABEL_DIM, max(MIN_LABEL_DIM, num_classes)) if num_classes else 0


RMSPROP_ALPHA = 0.99  # PyTorch's default smoothing constant (RMSProp's counterpart of Adam's β2)


def _optimizer(
    params: Any,
    name: str,
    lr: float,
    betas: tuple[float, float],
    lazy_interval: int = 1,
    device: torch.device | None = None,
) -> torch.optim.Optimizer:
    # A lazily regularised network takes interval+1 steps per interval: lr·c and betas^c keep its
    # optimiser's time constants per interval (StyleGAN2-ADA's mb_ratio); RMSProp's α as Adam's β2.
    c = lazy_regularisation_ratio(lazy_interval)
    if name == "rmsprop":  # no fused RMSProp in PyTorch: the multi-tensor (foreach) one on any device
        return torch.optim.RMSprop(params, lr=lr * c, alpha=RMSPROP_ALPHA**c, foreach=True)
    # Fused Adam (one kernel for all parameters) on CUDA and CPU: measured faster than the default
    # per-parameter loop on CPU too (bench/trainer_overhead.py).
    fused = device is not None and device.type in FUSED_ADAM_DEVICES
    return torch.optim.Adam(params, lr=lr * c, betas=(betas[0] ** c, betas[1] ** c), fused=fused or None)


FUSED_ADAM_DEVICES = ("cuda", "cpu")


def resolve_precision(requested: str, device: torch.device) -> torch.dtype | None:
    """training.precision on `device`: torch.bfloat16 for bf16 autocast, None for float32.

    auto is bf16 on a CUDA device that supports it, else float32 (CPU autocast is slower than float32 on
    most CPUs); bf16 asked for explicitly runs under autocast on any device."""
    if requested == "bf16":
        return torch.bfloat16
    if requested == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def configure_device(device: torch.device) -> None:
    """Process-wide settings for fast training on `device` (CUDA: TF32 matrix products and convolutions,
    cuDNN's autotuner, which suits a GAN's fixed shapes). Nothing on CPU."""
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def _discriminator(spec: JobSpec, info: DatasetInfo, objective: Objective, num_classes: int) -> nn.Module:
    arch, bodies = spec.architecture, BODIES[spec.architecture.name]
    # A per-sample gradient penalty is wrong through batch norm: layer norm in such a critic.
    norm = "layer" if objective.penalised else "batch"
    if objective.began is not None:
        # The code must be narrower than the data, or the auto-encoder learns the identity and
        # reconstructs fakes as well as reals: no signal for G (2-D points: a 1-D code).
        bottleneck = min(arch.latent_dim, max(1, math.prod(info.shape) // 2))
        encoder, features = bodies.discriminator_body(arch, info.shape, "none")
        decoder = bodies.generator_body(arch, bottleneck, info.shape, "none")
        return AutoEncoderDiscriminator(encoder, features, bottleneck, decoder)
    pack = spec.training.pack
    channels = info.shape[0] + (num_classes if objective.conditioning == "concat" else 0)
    body, features = bodies.discriminator_body(arch, (channels * pack, *info.shape[1:]), norm)
    info_codes = objective.info
    q_head = QHead(features, info_codes.categorical_codes, info_codes.continuous_codes) if info_codes else None
    spectral = bool(getattr(arch, "spectral_norm", False))
    return Discriminator(body, features, pack, num_classes, objective.conditioning, q_head, spectral)


def build_gan(spec: JobSpec, info: DatasetInfo, device: torch.device) -> GAN:
    """Networks, optimisers and loss for `spec` on data described by `info` (shape after resize).

    Seeds are the caller's to set. Raises ValueError for a spec that cannot work on this data.
    """
    problems = check_compatible(spec, info)
    if problems:
        raise ValueError("; ".join(problem.message for problem in problems))
    objective = objective_from_spec(spec.loss, info.shape)
    arch = spec.architecture
    num_classes = info.num_classes if spec.loss.name == "cgan" else 0
    codes = objective.info
    latent = LatentSpace(
        latent_dim=arch.latent_dim,
        num_classes=num_classes,
        categorical_codes=codes.categorical_codes if codes else (),
        continuous_codes=codes.continuous_codes if codes else 0,
    )
    label_dim = _label_dim(num_classes)
    in_dim = Generator.input_dim(arch.latent_dim, label_dim, latent.categorical_codes, latent.continuous_codes)
    body = BODIES[arch.name].generator_body(arch, in_dim, info.shape, "batch")
    generator = Generator(
        body, arch.latent_dim, num_classes, label_dim, latent.categorical_codes, latent.continuous_codes
    )
    discriminator = _discriminator(spec, info, objective, num_classes)
    # The paper's initialisation (each architecture module says which); G's label embedding keeps
    # PyTorch's N(0, 1): it is an input code concatenated beside z ~ N(0, I).
    BODIES[arch.name].initialise(generator.body)
    BODIES[arch.name].initialise(discriminator)
    generator, discriminator = generator.to(device), discriminator.to(device)
    # Convolutions run fastest on NHWC tensors: on a GPU (tensor cores), and on a CPU too (oneDNN takes NHWC
    # without a reorder per call; bench/bare_loops.py's steps on one CPU thread, 32 px digits: DCGAN 5-7 %
    # faster, ResNet 23-40 %). The batches follow (gan.py); the same weights, the same convolutions.
    channels_last = arch.name in CONVOLUTIONAL
    if channels_last:
        generator = generator.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
        discriminator = discriminator.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    configure_device(device)
    opt = objective.optimizer
    lazy = objective.r1_every if objective.lazy_r1 else 1
    return GAN(
        generator=generator,
        discriminator=discriminator,
        objective=objective,
        latent=latent,
        opt_g=_optimizer(generator.parameters(), opt["name"], opt["lr_g"], opt["betas"], device=device),
        opt_d=_optimizer(discriminator.parameters(), opt["name"], opt["lr_d"], opt["betas"], lazy, device),
        device=device,
        ema_decay=spec.training.ema_decay,
        pack=spec.training.pack,
        precision=resolve_precision(spec.training.precision, device),
        channels_last=channels_last,
    )
