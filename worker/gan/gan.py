"""One GAN being trained: networks, optimisers, EMA, and the D-then-G step.

    gan = build_gan(spec, info, device)     # worker/gan/factory.py
    metrics = gan.train_step(batches.next)  # n_critic D updates, then one G update

Every D update draws its own noise (and labels / codes) and trains on a fake
batch made without a graph; the G update draws a fresh batch of its own, as
every official implementation does (WGAN, WGAN-GP, DRAGAN, InfoGAN, SNGAN).
A Lipschitz constraint (weight clipping, gradient penalties) applies to the
critic — its body and its D head — never to InfoGAN's Q head. Lazy R1 is a
separate regularisation step every `r1_every` D steps (StyleGAN2-ADA).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from worker.gan import losses
from worker.gan.discriminator import QHead
from worker.gan.ema import EMA
from worker.gan.latent import Inputs, LatentSpace
from worker.gan.objectives import Objective
from worker.gan.penalties import (
    dragan_perturb,
    gradient_norms,
    input_gradient_norms,
    interpolate,
    norm_penalty,
    per_sample_uniform,
    r1_penalty,
    uniform_like,
)

Batch = tuple[Tensor, Tensor | None]

# The metrics train_step computes only when asked for diagnostics (the steps whose metrics are read).
DIAGNOSTICS = frozenset({"grad_norm_d", "grad_norm_g", "d_real", "d_fake"})


def critic_parameters(discriminator: nn.Module) -> list[nn.Parameter]:
    """The parameters a critic's Lipschitz constraint covers: all of D's but its Q head's (InfoGAN).

    Q only predicts codes from D's features; clipping it keeps Q from ever learning them.
    """
    q_head = getattr(discriminator, "q_head", None)
    exclude = {id(p) for p in q_head.parameters()} if isinstance(q_head, nn.Module) else set()
    return [p for p in discriminator.parameters() if id(p) not in exclude]


def _grad_norm(module: nn.Module, device: torch.device) -> Tensor:
    """‖∇θ‖₂ over all of a module's parameter gradients, as a device tensor (no sync)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).detach() if grads else torch.zeros((), device=device)


class GAN:
    def __init__(
        self,
        *,
        generator: nn.Module,
        discriminator: nn.Module,
        objective: Objective,
        latent: LatentSpace,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        device: torch.device,
        ema_decay: float | None = None,
        pack: int = 1,
        precision: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> None:
        self.generator, self.discriminator = generator, discriminator
        self.train_g: nn.Module = generator  # DDP wrappers replace these two (worker/ddp.py)
        self.train_d: nn.Module = discriminator
        self.precision, self.channels_last = precision, channels_last
        self.objective, self.latent = objective, latent
        self.opt_g, self.opt_d = opt_g, opt_d
        self.device, self.pack = device, pack
        self.ema = EMA(generator, ema_decay) if ema_decay else None
        self.generator_steps = 0
        self.discriminator_steps = 0
        k0 = objective.began.k0 if objective.began else 0.0
        self.k = torch.tensor(k0, device=device)  # BEGAN's k_t; a tensor so the step never syncs
        self.last_r1 = torch.zeros((), device=device)
        self._critic_params = critic_parameters(discriminator)

    # ------------------------------------------------------------------ training

    def train_step(self, next_batch: Callable[[], Batch], diagnostics: bool = True) -> dict[str, Tensor]:
        """n_critic D updates, each on a fresh real batch and fresh noise, then one G update on
        fresh noise of the same batch size. Returns detached 0-d metrics, all on the device: the losses
        (and penalties, Wasserstein estimate, BEGAN's k_t, InfoGAN's MI) every step; with `diagnostics`
        also grad_norm_d, grad_norm_g (‖∇θ‖₂ after the last D update / the G update), d_real and d_fake
        (mean D scores of the last D update)."""
        steps = self.objective.critic_steps(self.generator_steps)
        for i in range(steps):
            real, labels = next_batch()
            if self.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            inputs = self.latent.sample(real.shape[0], real.device)
            with torch.no_grad(), self._autocast():  # D trains on detached fakes
                fake = self.generator(**inputs)
            metrics = self._discriminator_step(real, labels, fake, inputs, diagnostics and i == steps - 1)
        inputs = self.latent.sample(real.shape[0], real.device)
        with self._autocast():
            fake = self.train_g(**inputs)
        metrics.update(self._generator_step(fake, inputs, diagnostics))
        if self.ema is not None:
            self.ema.update(self.generator, self.generator_steps)
        self.generator_steps += 1
        return metrics

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast for the forwards when `precision` asks for it; nothing otherwise."""
        if self.precision is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.precision)

    def _discriminator_step(
        self, real: Tensor, labels: Tensor | None, fake: Tensor, inputs: Inputs, diagnostics: bool = True
    ) -> dict[str, Tensor]:
        o, d = self.objective, self.train_d
        r1_now = o.r1_gamma > 0 and self.discriminator_steps % o.r1_every == 0
        r1_inline = r1_now and not o.lazy_r1  # r1_every 1: R1 is part of every D loss (Mescheder et al.)
        if r1_inline:
            real = real.detach().requires_grad_(True)
        with self._autocast():
            out_real = d(real, labels)
            out_fake = d(fake, inputs.get("labels"))
        score_real, score_fake = out_real.score.float(), out_fake.score.float()  # losses in float32
        metrics: dict[str, Tensor] = {}
        if o.began is not None:
            loss = losses.d_began(score_real, score_fake, self.k)
        else:
            assert o.d_loss is not None
            loss = o.d_loss(score_real, score_fake)
        if o.adversarial in ("wgan", "wgan-gp"):
            metrics["wasserstein"] = (score_real.mean() - score_fake.mean()).detach()
        if o.penalty is not None:
            penalty = self._gradient_penalty(real.detach(), fake, labels)
            loss = loss + o.penalty_weight * penalty
            metrics["gradient_penalty"] = penalty.detach()
        if r1_inline:
            r1 = r1_penalty(gradient_norms(score_real, real, self.pack))
            loss = loss + o.r1_gamma / 2 * r1
            self.last_r1 = r1.detach()
        if o.info is not None:
            info_nll = self.latent.code_nll(self._q(out_fake.features.float()), inputs, o.info.continuous_std)
            loss = loss + o.info.weight * info_nll  # trains Q and D's shared body
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        if diagnostics:
            metrics["grad_norm_d"] = _grad_norm(self.discriminator, self.device)
        self.opt_d.step()
        self._constrain()
        if r1_now and o.lazy_r1:
            self._lazy_r1_step(real, labels)
        self.discriminator_steps += 1
        if o.r1_gamma > 0:
            metrics["r1"] = self.last_r1
        if o.began is not None:
            loss_real, loss_fake = score_real.detach().mean(), score_fake.detach().mean()
            metrics["m_global"] = losses.began_convergence(loss_real, loss_fake, o.began.gamma)
            self.k = losses.began_k_update(self.k, loss_real, loss_fake, o.began.gamma, o.began.lambda_k)
            metrics["k_t"] = self.k.clone()
        metrics["loss_d"] = loss.detach()
        if diagnostics:
            metrics.update(d_real=score_real.detach().mean(), d_fake=score_fake.detach().mean())
        return metrics

    def _constrain(self) -> None:
        """WGAN's weight clipping after every critic optimiser step: the critic's parameters only."""
        clip = self.objective.clip_value
        if clip is not None:
            with torch.no_grad():
                for p in self._critic_params:
                    p.clamp_(-clip, clip)

    def _lazy_r1_step(self, real: Tensor, labels: Tensor | None) -> None:
        """StyleGAN2-ADA's D regularisation phase: its own backward and optimiser step on the main
        step's real batch, the penalty γ/2·E‖∇ₓD(x)‖² multiplied by the interval. The optimiser's lr
        and betas were scaled by interval/(interval+1) when it was built (factory.py)."""
        o = self.objective
        real = real.detach().requires_grad_(True)
        with self._autocast():
            score = self.train_d(real, labels).score
        r1 = r1_penalty(gradient_norms(score.float(), real, self.pack))
        self.opt_d.zero_grad(set_to_none=True)
        (o.r1_every * o.r1_gamma / 2 * r1).backward()
        self.opt_d.step()
        self._constrain()
        self.last_r1 = r1.detach()

    def _gradient_penalty(self, real: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
        o = self.objective
        if o.penalty == "wgan-gp":
            points = interpolate(real, fake, per_sample_uniform(real))
        else:
            points = dragan_perturb(real, o.perturb_scale, uniform_like(real), per_sample_uniform(real))
        norms = input_gradient_norms(self._critic_scores(labels), points, self.pack)
        return norm_penalty(norms, o.penalty_target)

    def _critic_scores(self, labels: Tensor | None) -> Callable[[Tensor], Tensor]:
        """v -> D(v | labels) as float32 scores, the forward under autocast: the penalty's gradient (taken
        with respect to float32 points), its norm and its square are float32 (GAN_REFERENCE.md)."""

        def scores(v: Tensor) -> Tensor:
            with self._autocast():
                score: Tensor = self.train_d(v, labels).score
            return score.float()

        return scores

    def _generator_step(self, fake: Tensor, inputs: Inputs, diagnostics: bool = True) -> dict[str, Tensor]:
        # The unwrapped D: its parameters take no gradient here, so its DDP wrapper has nothing to reduce.
        o, d = self.objective, self.discriminator
        d.requires_grad_(False)  # G's step needs gradients through D, not D's own
        try:
            with self._autocast():
                out = d(fake, inputs.get("labels"))
            loss = o.g_loss(out.score.float())
            metrics = {}
            if o.info is not None:
                info_nll = self.latent.code_nll(self._q(out.features.float()), inputs, o.info.continuous_std)
                loss = loss + o.info.weight * info_nll
                metrics["mutual_info"] = self.latent.code_entropy() - info_nll.detach()
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            d.requires_grad_(True)
        if diagnostics:
            metrics["grad_norm_g"] = _grad_norm(self.generator, self.device)
        self.opt_g.step()
        metrics["loss_g"] = loss.detach()
        return metrics

    def _q(self, features: Tensor) -> tuple[list[Tensor], Tensor]:
        q_head = self.discriminator.q_head
        assert isinstance(q_head, QHead), "infogan needs a discriminator with a Q head"
        codes: tuple[list[Tensor], Tensor] = q_head(features)
        return codes

    # ------------------------------------------------------------------ sampling

    def fixed_inputs(self, n: int, generator: torch.Generator) -> Inputs:
        """The fixed latent batch for snapshots (labels / first categorical code = i mod K), on self's device."""
        return self.latent.fixed(n, generator, self.device)

    def generate(self, inputs: Inputs) -> Tensor:
        """Samples in the data's layout (contiguous): no grad, eval mode, the EMA generator when enabled."""
        model = self.ema.model if self.ema is not None else self.generator
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                samples: Tensor = model(**{name: t.to(self.device) for name, t in inputs.items()})
                return samples.contiguous()  # NCHW for the consumers, whatever the layout the nets run in
        finally:
            model.train(was_training)

    def snapshot_labels(self, inputs: Inputs) -> Tensor | None:
        """The class asked for (cgan) or the first categorical code (infogan) of each snapshot sample."""
        if "labels" in inputs:
            return inputs["labels"]
        if "categorical" in inputs:
            return inputs["categorical"][:, 0]
        return None

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (tensors, numbers and dicts only: loads with weights_only=True)."""
        state: dict[str, Any] = {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "k": self.k.detach().cpu(),
            "last_r1": self.last_r1.detach().cpu(),
            "generator_steps": self.generator_steps,
            "discriminator_steps": self.discriminator_steps,
        }
        if self.ema is not None:
            state["generator_ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.k = state["k"].to(self.device)
        self.last_r1 = state["last_r1"].to(self.device)
        self.generator_steps = int(state["generator_steps"])
        self.discriminator_steps = int(state["discriminator_steps"])
        if self.ema is not None:
            self.ema.load_state_dict(state["generator_ema"])

    def weights(self) -> dict[str, Tensor]:
        """Flat, contiguous CPU tensors for safetensors: generator.*, discriminator.*, generator_ema.*."""
        modules = {"generator": self.generator, "discriminator": self.discriminator}
        if self.ema is not None:
            modules["generator_ema"] = self.ema.model
        return {
            f"{prefix}.{name}": tensor.detach().to("cpu", copy=True).contiguous()
            for prefix, module in modules.items()
            for name, tensor in module.state_dict().items()
        }
