"""Every loss of the zoo against values worked out by hand on tiny tensors (GAN_REFERENCE.md)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from models.catalog import ARCHITECTURE_CLASSES, AUTOENCODER_ARCHITECTURES, LOSS_CLASSES
from models.datasets import BUILTIN_DATASETS
from models.spec import JobSpec
from worker.gan import ARCHITECTURES, GAN, LOSSES, build_gan, load_builtin
from worker.gan import losses as L
from worker.gan.discriminator import DOutput
from worker.gan.gan import critic_parameters
from worker.gan.latent import LatentSpace
from worker.gan.objectives import BOOST_CRITIC_STEPS, objective_from_spec
from worker.gan.penalties import dragan_perturb, gradient_norms, interpolate, per_sample_uniform

CPU = torch.device("cpu")


def sp(v: float) -> float:
    return math.log1p(math.exp(v))


def close(actual: Tensor | float, expected: float, tol: float = 1e-5) -> None:
    assert float(actual) == pytest.approx(expected, abs=tol, rel=tol)


def make_spec(
    loss: dict[str, Any], arch: dict[str, Any] | None = None, dataset: str = "ring8", **training: Any
) -> JobSpec:
    return JobSpec.model_validate(
        {
            "dataset": {"builtin": dataset},
            "architecture": arch or {"name": "mlp", "hidden": 16, "depth": 1},
            "loss": loss,
            "training": {"batch_size": 8, **training},
        }
    )


def make_gan(loss: dict[str, Any], **training: Any) -> GAN:
    spec = make_spec(loss, **training)
    return build_gan(spec, BUILTIN_DATASETS["ring8"], CPU)


REAL = torch.tensor([[0.5, -1.0], [2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
FAKE = torch.tensor([[1.0, 0.0], [0.0, -0.5], [3.0, 1.0], [-1.0, 2.0]])


class QuadraticCritic(nn.Module):
    """D(x) = a·½‖x‖² + b per sample, so ∇ₓD = a·x exactly."""

    def __init__(self, a: float = 1.0, b: float = 0.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))
        self.q_head = None

    def forward(self, x: Tensor, labels: Tensor | None = None) -> DOutput:  # noqa: ARG002 - the D interface
        flat = x.flatten(1)
        return DOutput(self.a * 0.5 * flat.pow(2).sum(1) + self.b, flat)


class ConstantGenerator(nn.Module):
    """Ignores z: always the FAKE batch (a parameter, so G has something to train)."""

    def __init__(self) -> None:
        super().__init__()
        self.points = nn.Parameter(FAKE.clone())

    def forward(self, z: Tensor, **_: Tensor) -> Tensor:  # noqa: ARG002 - the G interface
        return self.points * 1.0


def toy_gan(loss: dict[str, Any], critic: nn.Module | None = None) -> tuple[GAN, nn.Module]:
    spec = make_spec(loss)
    critic = critic or QuadraticCritic()
    generator = ConstantGenerator()
    gan = GAN(
        generator=generator,
        discriminator=critic,
        objective=objective_from_spec(spec.loss, REAL.shape[1:]),
        latent=LatentSpace(latent_dim=2),
        opt_g=torch.optim.SGD(generator.parameters(), lr=0.1),
        opt_d=torch.optim.SGD(critic.parameters(), lr=0.1),
        device=CPU,
    )
    return gan, critic


def real_batches(x: Tensor = REAL) -> Callable[[], tuple[Tensor, None]]:
    return lambda: (x.clone(), None)


def quadratic(x: Tensor) -> Tensor:
    return 0.5 * x.flatten(1).pow(2).sum(1)


# ------------------------------------------------------------------ pure loss functions

R = torch.tensor([0.0, 2.0])
F_ = torch.tensor([1.0, -1.0])


def test_minimax_and_nonsaturating_by_hand() -> None:
    close(L.d_minimax(R, F_), (sp(0) + sp(-2)) / 2 + (sp(1) + sp(-1)) / 2)
    close(L.g_minimax(F_), -(sp(1) + sp(-1)) / 2)  # saturating: minimises −log(1 − D)
    close(L.g_nonsaturating(F_), (sp(-1) + sp(1)) / 2)
    # the saturating loss pushes D(x̃) up like the NS loss: the same sign of gradient
    fake = F_.clone().requires_grad_(True)
    L.g_minimax(fake).backward()
    assert (fake.grad < 0).all()


def test_least_squares_by_hand() -> None:
    close(L.d_least_squares(R, F_, a=-1.0, b=1.0), 0.5 * ((0 - 1) ** 2 + (2 - 1) ** 2) / 2 + 0.5 * (2**2 + 0) / 2)
    close(L.g_least_squares(F_, c=0.5), 0.5 * ((1 - 0.5) ** 2 + (-1 - 0.5) ** 2) / 2)


def test_wasserstein_and_hinge_by_hand() -> None:
    close(L.d_wasserstein(R, F_), 0.0 - 1.0)  # E D(x̃) − E D(x) = 0 − 1
    close(L.g_wasserstein(F_), 0.0)
    close(L.g_wasserstein(torch.tensor([1.0, 2.0])), -1.5)
    # relu(1 − [0, 2]) = [1, 0]; relu(1 + [1, −1]) = [2, 0]
    close(L.d_hinge(R, F_), 0.5 + 1.0)


def test_began_losses_by_hand() -> None:
    v = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    recon = torch.tensor([[0.0, 0.0], [1.0, -3.0]])
    per_sample = L.reconstruction_error(v, recon)
    assert per_sample.tolist() == pytest.approx([1.5, 2.0])
    real, fake = torch.tensor([0.2, 0.4]), torch.tensor([0.5, 0.7])
    close(L.d_began(real, fake, 0.25), 0.3 - 0.25 * 0.6)
    close(L.g_began(fake), 0.6)
    k = torch.tensor(0.5)
    close(L.began_k_update(k, torch.tensor(0.3), torch.tensor(0.6), 0.5, 0.1), 0.5 + 0.1 * (0.15 - 0.6))
    close(L.began_k_update(k, torch.tensor(10.0), torch.tensor(0.0), 0.5, 1.0), 1.0)  # clipped at 1
    close(L.began_k_update(k, torch.tensor(0.0), torch.tensor(10.0), 0.5, 1.0), 0.0)  # clipped at 0
    close(L.began_convergence(torch.tensor(0.3), torch.tensor(0.6), 0.5), 0.3 + abs(0.15 - 0.6))


def test_infogan_categorical_term_is_cross_entropy_on_logits() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    codes = torch.tensor([0, 2])
    z0 = math.log(math.exp(2) + 1 + math.exp(-1))
    z1 = math.log(2 + math.e)
    expected = ((z0 - 2.0) + (z1 - 0.0)) / 2
    close(L.categorical_code_nll(logits, codes), expected)
    # A softmax before the cross-entropy (the pitfall) gives a different, wrong value.
    assert float(L.categorical_code_nll(logits.softmax(1), codes)) != pytest.approx(expected, abs=1e-3)


def test_infogan_continuous_term_is_a_fixed_std_gaussian_nll() -> None:
    mean = torch.tensor([[0.0, 1.0]])
    codes = torch.tensor([[0.5, -1.0]])
    std = 0.5
    per_dim = [0.5 * (0.5 / std) ** 2, 0.5 * (2.0 / std) ** 2]
    expected = sum(per_dim) + 2 * (math.log(std) + 0.5 * math.log(2 * math.pi))
    close(L.gaussian_code_nll(mean, codes, std), expected)


def test_infogan_code_term_sums_cross_entropy_on_logits_and_the_gaussian_nll() -> None:
    latent = LatentSpace(latent_dim=2, categorical_codes=(3, 2), continuous_codes=1)
    logits = [torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.5, -0.5]])]
    means = torch.tensor([[0.25]])
    inputs = {"categorical": torch.tensor([[0, 1]]), "continuous": torch.tensor([[-0.25]])}
    ce_first = math.log(math.exp(2) + 1 + math.exp(-1)) - 2.0
    ce_second = math.log(math.exp(0.5) + math.exp(-0.5)) + 0.5
    gaussian = 0.5 * (0.5 / 0.5) ** 2 + math.log(0.5) + 0.5 * math.log(2 * math.pi)
    close(latent.code_nll((logits, means), inputs, std=0.5), ce_first + ce_second + gaussian)
    close(latent.code_entropy(), math.log(3) + math.log(2) + math.log(2))


# ------------------------------------------------------------------ penalties


def test_epsilon_is_drawn_per_sample_and_broadcast() -> None:
    torch.manual_seed(0)
    x = torch.zeros(6, 3, 4, 4)
    eps = per_sample_uniform(x)
    assert eps.shape == (6, 1, 1, 1)
    assert len(set(eps.flatten().tolist())) == 6
    real, fake = torch.ones(6, 3, 4, 4), torch.zeros(6, 3, 4, 4)
    mixed = interpolate(real, fake, eps)
    for i in range(6):  # εx + (1−ε)x̃, one ε for all of sample i's pixels
        assert torch.allclose(mixed[i], torch.full((3, 4, 4), float(eps[i])))


def test_gradient_norm_is_over_all_non_batch_dims_per_sample() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    norms = gradient_norms(quadratic(x), x)
    expected = x.detach().flatten(1).norm(dim=1)  # ∇½‖x‖² = x
    assert torch.allclose(norms, expected)
    channel_only = x.detach().norm(dim=1).mean((1, 2))
    assert not torch.allclose(norms, channel_only)
    # packed critic input: two consecutive samples form one input, one norm
    x2 = x.detach().clone().requires_grad_(True)
    packed = gradient_norms(quadratic(x2.reshape(2, 6, 5, 5)), x2, pack=2)
    assert torch.allclose(packed, x.detach().reshape(2, -1).norm(dim=1))


def test_dragan_perturbation_by_hand() -> None:
    real = torch.tensor([[0.0, 2.0], [4.0, 2.0]])
    noise = torch.tensor([[0.5, 0.0], [1.0, 0.25]])
    alpha = torch.tensor([[0.5], [1.0]])
    std = float(real.std())  # the batch's std over all elements
    perturbed = real + 0.5 * std * noise
    expected = real + alpha * (perturbed - real)
    assert torch.allclose(dragan_perturb(real, 0.5, noise, alpha), expected)
    assert torch.allclose(dragan_perturb(real, 0.5, noise, alpha)[0], torch.tensor([0.25 * std * 0.5, 2.0]))


def test_wgan_gp_step_interpolates_per_sample_and_penalises_the_flattened_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = torch.tensor([[0.0], [0.25], [0.5], [1.0]])
    monkeypatch.setattr("worker.gan.gan.per_sample_uniform", lambda _x: eps)
    gan, critic = toy_gan({"name": "wgan-gp", "n_critic": 1, "gp_weight": 10.0})
    metrics = gan.train_step(real_batches())
    x_hat = eps * REAL + (1 - eps) * FAKE
    penalty = (x_hat.norm(dim=1) - 1).pow(2).mean()  # ∇D(x̂) = a·x̂ with a = 1
    close(metrics["gradient_penalty"], float(penalty))
    adversarial = quadratic(FAKE).mean() - quadratic(REAL).mean()
    close(metrics["loss_d"], float(adversarial + 10 * penalty))
    close(metrics["wasserstein"], float(-adversarial))
    # b gets only the adversarial gradient, 1 − 1 = 0; a gets adversarial + penalty gradients
    assert float(critic.b.grad) == pytest.approx(0.0, abs=1e-6)


def test_dragan_d_loss_backpropagates_the_adversarial_term(monkeypatch: pytest.MonkeyPatch) -> None:
    noise = torch.full_like(REAL, 0.5)
    alpha = torch.tensor([[1.0], [0.0], [0.5], [1.0]])
    monkeypatch.setattr("worker.gan.gan.uniform_like", lambda _x: noise)
    monkeypatch.setattr("worker.gan.gan.per_sample_uniform", lambda _x: alpha)
    gan, critic = toy_gan({"name": "dragan", "gp_weight": 10.0, "k": 1.0})
    metrics = gan.train_step(real_batches())
    x_hat = REAL + alpha * (0.5 * float(REAL.std()) * noise)
    penalty = (x_hat.norm(dim=1) - 1).pow(2).mean()
    d_real, d_fake = quadratic(REAL), quadratic(FAKE)
    close(metrics["gradient_penalty"], float(penalty))
    close(metrics["loss_d"], float(L.d_minimax(d_real, d_fake) + 10 * penalty))
    # The penalty does not depend on b: b's gradient is the NS D loss's, which must have been back-propagated.
    expected_b_grad = float((-torch.sigmoid(-d_real)).mean() + torch.sigmoid(d_fake).mean())
    assert expected_b_grad != pytest.approx(0.0, abs=1e-3)
    close(critic.b.grad, expected_b_grad)


def test_lazy_r1_is_its_own_step_every_interval_with_the_penalty_times_the_interval() -> None:
    gan, critic = toy_gan({"name": "nsgan", "r1_gamma": 2.0, "r1_every": 4})
    records: list[tuple[int, float, float, bool]] = []  # D step, a, ∂/∂a, whether b has a gradient
    step = gan.opt_d.step

    def recording_step(*args: Any, **kwargs: Any) -> Any:
        assert critic.a.grad is not None
        records.append(
            (gan.discriminator_steps, float(critic.a.detach()), float(critic.a.grad), critic.b.grad is not None)
        )
        return step(*args, **kwargs)

    gan.opt_d.step = recording_step  # type: ignore[method-assign]
    metrics = [gan.train_step(real_batches()) for _ in range(9)]  # nsgan: one D step per G step
    # D steps 0..8, and a regularisation step right after D steps 0, 4 and 8 (StyleGAN2-ADA's phases)
    assert [r[0] for r in records] == [0, 0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 8]
    mean_sq = float(REAL.pow(2).sum(1).mean())  # E‖x‖²; ∇ₓD = a·x, so R1 = a²·E‖x‖²
    for index in (1, 6, 11):
        _, a, grad_a, b_has_grad = records[index]
        # the step's loss is interval·γ/2·a²·E‖x‖² = 4·a²·E‖x‖² alone: ∂/∂a = 8·a·E‖x‖², b untouched
        close(grad_a, 8 * a * mean_sq, tol=1e-4)
        assert not b_has_grad
    for index in (0, 2, 3, 4, 5, 7, 8, 9, 10):
        assert records[index][3]  # the main steps carry the adversarial loss (b's gradient)
    a_at_reg = records[6][1]
    close(metrics[4]["r1"], a_at_reg**2 * mean_sq, tol=1e-4)  # the metric: E‖∇D(x)‖² of the last R1 step
    close(metrics[5]["r1"], a_at_reg**2 * mean_sq, tol=1e-4)  # kept between R1 steps


def test_r1_every_step_is_part_of_the_d_loss() -> None:
    gan, _ = toy_gan({"name": "nsgan", "r1_gamma": 2.0, "r1_every": 1})
    calls = []
    step = gan.opt_d.step
    gan.opt_d.step = lambda *a, **k: (calls.append(1), step(*a, **k))[1]  # type: ignore[method-assign]
    first = gan.train_step(real_batches())
    r1 = float(REAL.pow(2).sum(1).mean())  # at a = 1
    close(first["r1"], r1)
    close(first["loss_d"], float(L.d_minimax(quadratic(REAL), quadratic(FAKE))) + 2.0 / 2 * r1)
    assert len(calls) == 1  # no separate regularisation step


@pytest.mark.parametrize(
    "loss,lr,betas",
    [({"name": "nsgan"}, 2e-4, (0.5, 0.999)), ({"name": "hinge"}, 2e-4, (0.0, 0.9))],
)
def test_lazy_r1_scales_the_d_optimisers_lr_and_betas_by_interval_over_interval_plus_one(
    loss: dict[str, Any], lr: float, betas: tuple[float, float]
) -> None:
    for every, c in ((16, 16 / 17), (4, 4 / 5), (1, 1.0)):
        gan = make_gan({**loss, "r1_gamma": 1.0, "r1_every": every, "lr_d": lr, "lr_g": lr, "betas": list(betas)})
        group = gan.opt_d.param_groups[0]
        close(group["lr"], lr * c, tol=1e-12)
        close(group["betas"][0], betas[0] ** c, tol=1e-12)
        close(group["betas"][1], betas[1] ** c, tol=1e-12)
        g_group = gan.opt_g.param_groups[0]  # G has no lazy regulariser: its optimiser is as given
        assert g_group["lr"] == lr and tuple(g_group["betas"]) == betas
    plain = make_gan({**loss, "lr_d": lr, "lr_g": lr, "betas": list(betas)})  # no R1: no scaling
    assert plain.opt_d.param_groups[0]["lr"] == lr and tuple(plain.opt_d.param_groups[0]["betas"]) == betas


def test_lazy_r1_on_rmsprop_scales_lr_and_alpha() -> None:
    gan = make_gan({"name": "wgan", "r1_gamma": 1.0, "r1_every": 4, "lr_d": 5e-5, "lr_g": 5e-5})
    group = gan.opt_d.param_groups[0]
    assert isinstance(gan.opt_d, torch.optim.RMSprop)
    close(group["lr"], 5e-5 * 0.8, tol=1e-12)
    close(group["alpha"], 0.99**0.8, tol=1e-12)


# ------------------------------------------------------------------ losses in the training step


def test_wgan_clamps_every_critic_parameter_after_every_critic_step() -> None:
    torch.manual_seed(0)
    gan = make_gan({"name": "wgan", "clip_value": 0.01, "n_critic": 5})
    params = list(gan.discriminator.parameters())
    assert max(float(p.detach().abs().max()) for p in params) > 0.01  # initial weights are larger
    seen: list[float] = []
    step = gan.opt_d.step

    def recording_step(*args: Any, **kwargs: Any) -> Any:
        seen.append(max(float(p.detach().abs().max()) for p in params))
        return step(*args, **kwargs)

    gan.opt_d.step = recording_step  # type: ignore[method-assign]
    data = load_builtin("ring8")
    gan.train_step(lambda: (data.x[:8], None))
    assert len(seen) == 5
    assert all(value <= 0.01 + 1e-9 for value in seen[1:])  # clamped after each of the earlier critic steps
    assert max(float(p.detach().abs().max()) for p in params) <= 0.01 + 1e-9


def infogan_on(base: str, **loss: Any) -> GAN:
    spec = make_spec(
        {"name": "infogan", "base": base, "categorical_codes": [10], "continuous_codes": 0, **loss},
        {"name": "mlp", "hidden": 32, "depth": 1},
        batch_size=32,
    )
    return build_gan(spec, BUILTIN_DATASETS["ring8"], CPU)


def test_infogan_on_wgan_clips_the_critic_but_not_q_and_learns_the_code() -> None:
    torch.manual_seed(0)
    gan = infogan_on("wgan", lr_g=2e-3, lr_d=2e-3, n_critic=1)
    clip = gan.objective.clip_value
    assert clip == 0.01
    q_params = list(gan.discriminator.q_head.parameters())
    critic = critic_parameters(gan.discriminator)
    assert {id(p) for p in critic} | {id(p) for p in q_params} == {id(p) for p in gan.discriminator.parameters()}
    assert not {id(p) for p in critic} & {id(p) for p in q_params}
    data = load_builtin("ring8").x
    draw = torch.Generator().manual_seed(1)
    cross_entropy = []
    for _ in range(150):
        metrics = gan.train_step(lambda: (data[torch.randint(len(data), (32,), generator=draw)], None))
        cross_entropy.append(math.log(10) - float(metrics["mutual_info"]))  # one categorical code: H(c) − MI
    assert max(float(p.detach().abs().max()) for p in critic) <= clip + 1e-9  # body and D head clipped
    assert max(float(p.detach().abs().max()) for p in q_params) > 5 * clip  # Q's own head is not
    assert cross_entropy[0] == pytest.approx(math.log(10), abs=0.05)
    # log 10 = 2.30 nats is chance; a clipped Q head stays there. Measured: 0.97 after 125 steps.
    assert sum(cross_entropy[-20:]) / 20 < 0.6 * math.log(10)


def test_infogan_gradient_penalty_is_of_d_output_only() -> None:
    data = load_builtin("ring8").x
    for base in ("wgan-gp", "dragan"):
        torch.manual_seed(0)
        gan = infogan_on(base, info_lambda=0.0, n_critic=1)
        seen: list[bool] = []
        step = gan.opt_d.step

        def recording_step(*args: Any, gan: GAN = gan, seen: list[bool] = seen, step: Any = step) -> Any:
            seen.append(all(p.grad is None or not p.grad.any() for p in gan.discriminator.q_head.parameters()))
            return step(*args)

        gan.opt_d.step = recording_step  # type: ignore[method-assign]
        metrics = gan.train_step(lambda: (data[:32], None))
        assert float(metrics["gradient_penalty"]) > 0
        assert seen == [True], base  # with the MI term off, nothing (no penalty) reaches Q


def test_wgan_critic_boost_schedule_of_the_official_code() -> None:
    objective = objective_from_spec(make_spec({"name": "wgan", "critic_boost": True}).loss, (2,))
    assert [objective.critic_steps(s) for s in (0, 24, 25, 499, 500, 501, 1000)] == [100, 100, 5, 5, 100, 5, 100]
    plain = objective_from_spec(make_spec({"name": "wgan"}).loss, (2,))
    assert plain.critic_steps(0) == 5
    gan = make_gan({"name": "wgan", "critic_boost": True})
    data = load_builtin("ring8")
    calls = []

    def batches() -> tuple[Tensor, None]:
        calls.append(1)
        return data.x[:8], None

    gan.train_step(batches)
    assert len(calls) == BOOST_CRITIC_STEPS


def test_began_step_uses_k_and_updates_it_with_the_clip() -> None:
    torch.manual_seed(0)
    gan = make_gan({"name": "began", "k0": 0.3, "lambda_k": 0.05, "gamma": 0.5})
    data = load_builtin("ring8")
    metrics = gan.train_step(lambda: (data.x[:8], None))
    l_real, l_fake = float(metrics["d_real"]), float(metrics["d_fake"])
    close(metrics["loss_d"], l_real - 0.3 * l_fake)
    expected_k = min(max(0.3 + 0.05 * (0.5 * l_real - l_fake), 0.0), 1.0)
    close(metrics["k_t"], expected_k)
    close(metrics["m_global"], l_real + abs(0.5 * l_real - l_fake))
    close(metrics["loss_g"], float(metrics["loss_g"]))
    gan_high = make_gan({"name": "began", "k0": 1.0, "lambda_k": 1.0, "gamma": 1.0})
    for _ in range(3):
        k = float(gan_high.train_step(lambda: (data.x[:8], None))["k_t"])
        assert 0.0 <= k <= 1.0


def test_infogan_mutual_information_trains_g_q_and_the_shared_body() -> None:
    data = load_builtin("ring8")
    after = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        gan = make_gan({"name": "infogan", "info_lambda": weight, "categorical_codes": [3], "continuous_codes": 1})
        q_before = [p.detach().clone() for p in gan.discriminator.q_head.parameters()]
        torch.manual_seed(1)
        metrics = gan.train_step(lambda: (data.x[:8], None))
        q_moved = any(
            not torch.equal(a, b) for a, b in zip(q_before, gan.discriminator.q_head.parameters(), strict=True)
        )
        after[weight] = (
            q_moved,
            [p.detach().clone() for p in gan.discriminator.body.parameters()],
            [p.detach().clone() for p in gan.generator.parameters()],
            metrics,
        )
    assert not after[0.0][0] and after[1.0][0]  # Q learns only through the MI term
    assert any(not torch.equal(a, b) for a, b in zip(after[0.0][1], after[1.0][1], strict=True))  # D's body
    assert any(not torch.equal(a, b) for a, b in zip(after[0.0][2], after[1.0][2], strict=True))  # G
    assert "mutual_info" in after[1.0][3]
    assert float(after[1.0][3]["mutual_info"]) <= math.log(3) + math.log(2) + 10


@pytest.mark.parametrize("loss,n_critic", [("nsgan", 1), ("wgan-gp", 5), ("infogan", 1), ("cgan", 1)])
def test_g_step_draws_fresh_noise_and_d_steps_train_on_detached_fakes(loss: str, n_critic: int) -> None:
    data = load_builtin("ring8")
    torch.manual_seed(0)
    gan = make_gan({"name": loss})
    seen: list[dict[str, Tensor]] = []
    grad_enabled: list[bool] = []

    def record(_: nn.Module, _args: tuple[Any, ...], kwargs: dict[str, Tensor], out: Tensor) -> None:
        seen.append({k: v.clone() for k, v in kwargs.items()})
        grad_enabled.append(out.requires_grad)

    gan.generator.register_forward_hook(record, with_kwargs=True)
    gan.train_step(lambda: (data.x[:8], data.y[:8] if data.y is not None else None))
    assert len(seen) == n_critic + 1  # one batch per D step, then G's own
    assert grad_enabled == [False] * n_critic + [True]  # D's fakes carry no graph into G
    d_last, g = seen[-2], seen[-1]
    assert not torch.equal(d_last["z"], g["z"])
    for name in ("labels", "categorical", "continuous"):  # cgan's labels, infogan's codes: fresh too
        if name in g:
            assert not torch.equal(d_last[name], g[name]), name
    if loss == "cgan":
        assert "labels" in g
    if loss == "infogan":
        assert {"categorical", "continuous"} <= g.keys()


def test_no_batch_norm_in_a_critic_with_a_gradient_penalty() -> None:
    dcgan = {"name": "dcgan", "base_channels": 8, "latent_dim": 8}
    info = load_builtin("digits", 16).info

    def has_batch_norm(loss: dict[str, Any], arch: dict[str, Any]) -> bool:
        spec = JobSpec.model_validate(
            {"dataset": {"builtin": "digits", "resize": 16}, "architecture": arch, "loss": loss}
        )
        d = build_gan(spec, info, CPU).discriminator
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())

    assert has_batch_norm({"name": "nsgan"}, dcgan)  # the check can fail: plain DCGAN's D has batch norm
    for loss in ({"name": "wgan-gp"}, {"name": "dragan"}, {"name": "nsgan", "r1_gamma": 1.0}):
        assert not has_batch_norm(loss, dcgan), loss
        assert not has_batch_norm(loss, {"name": "resnet", "base_channels": 8}), loss
    assert not has_batch_norm({"name": "cgan", "base": "wgan-gp"}, dcgan)
    assert not has_batch_norm({"name": "infogan", "base": "dragan"}, dcgan)


# ------------------------------------------------------------------ resume and names


@pytest.mark.parametrize(
    "loss,training",
    [
        ({"name": "nsgan", "r1_gamma": 1.0, "r1_every": 2}, {"ema_decay": 0.9}),
        ({"name": "wgan-gp"}, {"pack": 2}),
        ({"name": "wgan", "critic_boost": True}, {}),
        ({"name": "began"}, {}),
        ({"name": "infogan"}, {}),
        ({"name": "cgan", "base": "dragan", "conditioning": "concat"}, {}),
    ],
)
def test_state_dict_round_trip_reproduces_the_next_step_exactly(loss: dict[str, Any], training: dict[str, Any]) -> None:
    data = load_builtin("ring8")
    torch.manual_seed(0)
    gan = make_gan(loss, **training)
    drawn = [0]

    def batches() -> tuple[Tensor, Tensor | None]:
        i = drawn[0] % 1000
        drawn[0] += 1
        return data.x[i * 8 : i * 8 + 8], data.y[i * 8 : i * 8 + 8] if data.y is not None else None

    for _ in range(3):
        gan.train_step(batches)
    buffer = io.BytesIO()
    torch.save({"gan": gan.state_dict(), "rng": torch.get_rng_state()}, buffer)
    position = drawn[0]
    expected = gan.train_step(batches)
    expected_weights = gan.weights()

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    torch.manual_seed(123)  # a different initialisation, overwritten by the load
    resumed = make_gan(loss, **training)
    resumed.load_state_dict(saved["gan"])
    torch.set_rng_state(saved["rng"])
    drawn[0] = position
    actual = resumed.train_step(batches)
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    weights = resumed.weights()
    assert weights.keys() == expected_weights.keys()
    for name in weights:
        assert torch.equal(weights[name], expected_weights[name]), name


def test_step_metrics_are_detached_zero_dim_tensors_with_the_trainers_names() -> None:
    gan = make_gan({"name": "wgan-gp"})
    data = load_builtin("ring8")
    metrics = gan.train_step(lambda: (data.x[:8], None))
    assert {
        "loss_g",
        "loss_d",
        "d_real",
        "d_fake",
        "grad_norm_g",
        "grad_norm_d",
        "wasserstein",
        "gradient_penalty",
    } <= set(metrics)
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())


def test_loss_and_architecture_names_match_the_spec() -> None:
    assert LOSSES == set(LOSS_CLASSES)
    assert ARCHITECTURES == set(ARCHITECTURE_CLASSES)
    info = BUILTIN_DATASETS["ring8"]
    for loss in sorted(LOSSES):
        assert build_gan(make_spec({"name": loss}), info, CPU).train_step is not None
    digits = load_builtin("digits", 16).info
    for arch in sorted(ARCHITECTURES - {"mlp"}):
        for loss in sorted(LOSSES):
            spec_body = {
                "dataset": {"builtin": "digits", "resize": 16},
                "architecture": {"name": arch, "base_channels": 4},
                "loss": {"name": loss},
            }
            spec = JobSpec.model_validate(spec_body)
            if loss == "began" and arch not in AUTOENCODER_ARCHITECTURES:
                with pytest.raises(ValueError, match="auto-encoder"):
                    build_gan(spec, digits, CPU)
            else:
                build_gan(spec, digits, CPU)


@pytest.mark.parametrize("name", ["wgan-gp", "dragan"])
def test_unset_penalty_weight_is_the_toy_value_on_2d_points_and_the_papers_elsewhere(name: str) -> None:
    unset = make_spec({"name": name}).loss
    assert objective_from_spec(unset, (2,)).penalty_weight == 0.1
    assert objective_from_spec(unset, (1, 16, 16)).penalty_weight == 10.0
    assert objective_from_spec(unset, (5,)).penalty_weight == 10.0  # tabular rows: the paper's
    assert objective_from_spec(make_spec({"name": name, "gp_weight": 3.0}).loss, (2,)).penalty_weight == 3.0
    wrapped = make_spec({"name": "cgan", "base": name}).loss
    assert objective_from_spec(wrapped, (2,)).penalty_weight == 0.1
