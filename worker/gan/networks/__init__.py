"""Network bodies per architecture; the wrappers in generator.py / discriminator.py add labels, codes and heads.

Each architecture module provides
    generator_body(arch, in_dim, shape, norm) -> nn.Module           # (B, in_dim) -> (B, *shape)
    discriminator_body(arch, in_shape, norm) -> (nn.Module, features) # (B, *in_shape) -> (B, features)
so that conditioning, packing, the InfoGAN Q head and BEGAN's auto-encoder are
written once for all architectures.
"""

from __future__ import annotations

from types import ModuleType

from worker.gan.networks import dcgan, mlp, resnet

BODIES: dict[str, ModuleType] = {"mlp": mlp, "dcgan": dcgan, "resnet": resnet}
