"""The GAN zoo: losses, architectures, built-in data sets and evaluation, behind the trainer's interface.

data = load_builtin("ring8")
gan = build_gan(spec, data.info, device)
metrics = gan.train_step(next_batch)
evaluate_points(gan.generate(gan.fixed_inputs(2500, g)).numpy(), "ring8")
"""

from __future__ import annotations

from worker.gan.datasets import LoadedData, load_builtin
from worker.gan.evaluation import evaluate_points
from worker.gan.factory import build_gan
from worker.gan.gan import GAN

LOSSES: frozenset[str] = frozenset(
    {"minimax", "nsgan", "lsgan", "wgan", "wgan-gp", "dragan", "hinge", "began", "cgan", "infogan"}
)
ARCHITECTURES: frozenset[str] = frozenset({"mlp", "dcgan", "resnet"})

__all__ = ["ARCHITECTURES", "GAN", "LOSSES", "LoadedData", "build_gan", "evaluate_points", "load_builtin"]
