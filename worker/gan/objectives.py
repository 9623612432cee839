"""A job's loss spec resolved into what the training step needs: loss functions and their settings.

The loss functions themselves are in losses.py; this maps spec names to them
and carries the hyperparameters (the paper's defaults are in models/spec.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from torch import Tensor

from models.catalog import default_gp_weight
from worker.gan import losses

DLoss = Callable[[Tensor, Tensor], Tensor]
GLoss = Callable[[Tensor], Tensor]

# Official WGAN code: 100 critic steps for the first 25 generator steps and every 500th.
BOOST_CRITIC_STEPS, BOOST_FIRST, BOOST_EVERY = 100, 25, 500


@dataclass(frozen=True)
class InfoSettings:
    weight: float
    categorical_codes: tuple[int, ...]
    continuous_codes: int
    continuous_std: float


@dataclass(frozen=True)
class BEGANSettings:
    gamma: float
    lambda_k: float
    k0: float


@dataclass(frozen=True)
class Objective:
    adversarial: str  # the base loss that scores D's outputs ("began" for BEGAN)
    d_loss: DLoss | None  # None for BEGAN, whose D loss also takes k_t
    g_loss: GLoss
    n_critic: int = 1
    penalty: Literal["wgan-gp", "dragan"] | None = None
    penalty_weight: float = 0.0
    penalty_target: float = 1.0
    perturb_scale: float = 0.5
    clip_value: float | None = None
    critic_boost: bool = False
    r1_gamma: float = 0.0
    r1_every: int = 16
    began: BEGANSettings | None = None
    info: InfoSettings | None = None
    conditioning: str | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)

    @property
    def penalised(self) -> bool:
        """Whether D is trained with a per-sample gradient penalty (so it must not use batch norm)."""
        return self.penalty is not None or self.r1_gamma > 0

    @property
    def lazy_r1(self) -> bool:
        """Whether R1 runs as its own regularisation step every `r1_every` > 1 D steps (StyleGAN2-ADA)."""
        return self.r1_gamma > 0 and self.r1_every > 1

    def critic_steps(self, generator_step: int) -> int:
        """D steps before generator step `generator_step` (0-based)."""
        if self.critic_boost and (generator_step < BOOST_FIRST or generator_step % BOOST_EVERY == 0):
            return BOOST_CRITIC_STEPS
        return self.n_critic


def _adversarial(name: str, loss: Any) -> tuple[DLoss, GLoss]:
    if name == "lsgan":
        return partial(losses.d_least_squares, a=loss.a, b=loss.b), partial(losses.g_least_squares, c=loss.c)
    return {
        "minimax": (losses.d_minimax, losses.g_minimax),
        "nsgan": (losses.d_minimax, losses.g_nonsaturating),
        "dragan": (losses.d_minimax, losses.g_nonsaturating),
        "wgan": (losses.d_wasserstein, losses.g_wasserstein),
        "wgan-gp": (losses.d_wasserstein, losses.g_wasserstein),
        "hinge": (losses.d_hinge, losses.g_wasserstein),
    }[name]


def objective_from_spec(loss: Any, data_shape: tuple[int, ...]) -> Objective:
    """Resolve a `models.spec` loss (any of LOSS_CLASSES) into an Objective for data of `data_shape`."""
    optimizer = {"name": loss.optimizer, "lr_g": loss.lr_g, "lr_d": loss.lr_d, "betas": tuple(loss.betas)}
    common = {"n_critic": loss.n_critic, "r1_gamma": loss.r1_gamma, "r1_every": loss.r1_every, "optimizer": optimizer}
    if loss.name == "began":
        began = BEGANSettings(gamma=loss.gamma, lambda_k=loss.lambda_k, k0=loss.k0)
        return Objective(adversarial="began", d_loss=None, g_loss=losses.g_began, began=began, **common)
    base = loss.base_loss() if loss.name in ("cgan", "infogan") else loss
    d_loss, g_loss = _adversarial(base.name, base)
    extra: dict[str, Any] = {}
    if base.name == "wgan":
        extra = {"clip_value": base.clip_value, "critic_boost": base.critic_boost}
    elif base.name in ("wgan-gp", "dragan"):
        weight = base.gp_weight if base.gp_weight is not None else default_gp_weight(data_shape)
        extra = {"penalty": base.name, "penalty_weight": weight, "penalty_target": 1.0}
        if base.name == "dragan":
            extra.update(penalty_target=base.k, perturb_scale=base.perturb_scale)
    if loss.name == "cgan":
        extra["conditioning"] = loss.conditioning
    if loss.name == "infogan":
        extra["info"] = InfoSettings(
            weight=loss.info_lambda,
            categorical_codes=tuple(loss.categorical_codes),
            continuous_codes=loss.continuous_codes,
            continuous_std=loss.continuous_std,
        )
    return Objective(adversarial=base.name, d_loss=d_loss, g_loss=g_loss, **common, **extra)
