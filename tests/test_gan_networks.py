"""Architectures: shapes per size and channels, conditioning, packing, Q head, auto-encoder D, EMA, sampling."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from models.datasets import BUILTIN_DATASETS, DatasetInfo
from models.spec import JobSpec
from worker.gan import build_gan
from worker.gan.discriminator import AutoEncoderDiscriminator, Discriminator

CPU = torch.device("cpu")


def images(channels: int, size: int, classes: int = 10) -> DatasetInfo:
    return DatasetInfo(kind="images", shape=(channels, size, size), num_classes=classes, size=100)


def spec(arch: dict[str, Any], loss: dict[str, Any], size: int | None = None, **training: Any) -> JobSpec:
    dataset: dict[str, Any] = {"builtin": "digits" if size else "ring8"}
    if size:
        dataset["resize"] = size
    return JobSpec.model_validate(
        {"dataset": dataset, "architecture": arch, "loss": loss, "training": {"batch_size": 4, **training}}
    )


@pytest.mark.parametrize("name", ["dcgan", "resnet"])
@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_image_architectures_produce_and_score_every_size(name: str, size: int, channels: int) -> None:
    info = images(channels, size)
    gan = build_gan(spec({"name": name, "base_channels": 4, "latent_dim": 8}, {"name": "nsgan"}, size), info, CPU)
    out = gan.generate(gan.fixed_inputs(3, torch.Generator().manual_seed(0)))
    assert out.shape == (3, channels, size, size)
    assert out.abs().max() <= 1.0  # tanh: the data's [-1, 1]
    score = gan.discriminator(torch.zeros(4, channels, size, size)).score
    assert score.shape == (4,)


def test_mlp_serves_points_of_any_dimension_and_flattened_images() -> None:
    rows = DatasetInfo(kind="points", shape=(7,), size=10)
    gan = build_gan(spec({"name": "mlp", "hidden": 8, "depth": 2}, {"name": "nsgan"}), rows, CPU)
    assert gan.generate({"z": torch.zeros(5, 2)}).shape == (5, 7)
    digits = images(1, 8)
    gan = build_gan(spec({"name": "mlp", "hidden": 8}, {"name": "hinge"}, None), digits, CPU)
    assert gan.generate({"z": torch.zeros(5, 2)}).shape == (5, 1, 8, 8)


def test_packing_concatenates_pack_samples_into_one_critic_input() -> None:
    gan = build_gan(
        spec({"name": "mlp", "hidden": 8, "depth": 1}, {"name": "nsgan"}, pack=4), BUILTIN_DATASETS["ring8"], CPU
    )
    first = next(m for m in gan.discriminator.modules() if isinstance(m, nn.Linear))
    assert first.in_features == 2 * 4
    x = torch.randn(8, 2)
    d = gan.discriminator
    assert d(x).score.shape == (2,)
    # the first critic input is samples 0..3 side by side
    expected = d.head(d.body(x[:4].reshape(1, 8))).squeeze(1)
    assert torch.allclose(d(x).score[0], expected[0])
    info = images(1, 16)
    image_gan = build_gan(spec({"name": "dcgan", "base_channels": 4}, {"name": "nsgan"}, 16, pack=2), info, CPU)
    conv = next(m for m in image_gan.discriminator.modules() if isinstance(m, nn.Conv2d))
    assert conv.in_channels == 2


def test_projection_conditioning_adds_the_label_embedding_inner_product() -> None:
    gan = build_gan(
        spec({"name": "mlp", "hidden": 8}, {"name": "cgan", "conditioning": "projection"}),
        BUILTIN_DATASETS["ring8"],
        CPU,
    )
    d = gan.discriminator
    assert isinstance(d, Discriminator) and d.projection is not None
    x, y = torch.randn(4, 2), torch.tensor([0, 3, 7, 3])
    features = d.body(x)
    expected = d.head(features).squeeze(1) + (d.projection(y) * features).sum(1)
    assert torch.allclose(d(x, y).score, expected)
    assert not torch.allclose(d(x, y).score, d(x, torch.tensor([1, 1, 1, 1])).score)


def test_concat_conditioning_feeds_one_hot_labels_to_d_and_g_embeds_them() -> None:
    info = images(1, 16)
    gan = build_gan(
        spec({"name": "dcgan", "base_channels": 4, "latent_dim": 8}, {"name": "cgan", "conditioning": "concat"}, 16),
        info,
        CPU,
    )
    conv = next(m for m in gan.discriminator.modules() if isinstance(m, nn.Conv2d))
    assert conv.in_channels == 1 + 10
    z = torch.randn(2, 8)
    a = gan.generate({"z": z, "labels": torch.tensor([0, 0])})
    b = gan.generate({"z": z, "labels": torch.tensor([5, 5])})
    assert not torch.allclose(a, b)
    assert gan.generator.embedding is not None


def test_infogan_q_head_shares_the_discriminator_body() -> None:
    gan = build_gan(
        spec({"name": "mlp", "hidden": 8}, {"name": "infogan", "categorical_codes": [4, 3], "continuous_codes": 2}),
        BUILTIN_DATASETS["ring8"],
        CPU,
    )
    d = gan.discriminator
    out = d(torch.randn(5, 2))
    logits, means = d.q_head(out.features)
    assert [t.shape for t in logits] == [(5, 4), (5, 3)] and means.shape == (5, 2)
    q_params = {id(p) for p in d.q_head.parameters()}
    body_params = {id(p) for p in d.body.parameters()}
    optimised = {id(p) for group in gan.opt_d.param_groups for p in group["params"]}
    assert q_params <= optimised and body_params <= optimised  # Q and the shared body train with D


@pytest.mark.parametrize("arch", [{"name": "mlp", "hidden": 8}, {"name": "dcgan", "base_channels": 4, "latent_dim": 8}])
def test_began_discriminator_is_an_auto_encoder_scoring_reconstruction_error(arch: dict[str, Any]) -> None:
    size = 16 if arch["name"] == "dcgan" else None
    info = images(1, 16) if size else BUILTIN_DATASETS["ring8"]
    gan = build_gan(spec(arch, {"name": "began"}, size), info, CPU)
    d = gan.discriminator
    assert isinstance(d, AutoEncoderDiscriminator)
    x = torch.rand(3, *info.shape) * 2 - 1
    recon = d.decoder(d.bottleneck(d.encoder(x)))
    assert recon.shape == x.shape
    assert torch.allclose(d(x).score, (x - recon).abs().flatten(1).mean(1))


def test_began_code_is_narrower_than_the_data() -> None:
    # A 2-D code on 2-D points lets the auto-encoder learn the identity: no signal for G.
    points = build_gan(
        spec({"name": "mlp", "hidden": 8, "latent_dim": 2}, {"name": "began"}), BUILTIN_DATASETS["ring8"], CPU
    )
    assert points.discriminator.bottleneck.out_features == 1
    images16 = build_gan(
        spec({"name": "dcgan", "base_channels": 4, "latent_dim": 64}, {"name": "began"}, 16), images(1, 16), CPU
    )
    assert images16.discriminator.bottleneck.out_features == 64


def test_resnet_spectral_norm_option() -> None:
    info = images(3, 32)
    arch = {"name": "resnet", "base_channels": 4, "latent_dim": 8}
    with_sn = build_gan(spec({**arch, "spectral_norm": True}, {"name": "hinge"}, 32), info, CPU).discriminator
    without = build_gan(spec({**arch, "spectral_norm": False}, {"name": "hinge"}, 32), info, CPU).discriminator
    assert any("parametrizations" in name for name, _ in with_sn.named_parameters())
    assert not any("parametrizations" in name for name, _ in without.named_parameters())


def test_mlp_spectral_norm_option_covers_every_linear_layer_of_d() -> None:
    arch = {"name": "mlp", "hidden": 8, "depth": 3}
    with_sn = build_gan(spec({**arch, "spectral_norm": True}, {"name": "hinge"}), BUILTIN_DATASETS["ring8"], CPU)
    linears = [m for m in with_sn.discriminator.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4 and all(hasattr(m, "parametrizations") for m in linears)
    without = build_gan(spec(arch, {"name": "hinge"}), BUILTIN_DATASETS["ring8"], CPU).discriminator
    assert not any(hasattr(m, "parametrizations") for m in without.modules())


def test_generate_is_eval_mode_no_grad_restores_train_mode_and_uses_the_ema_copy() -> None:
    info = images(1, 16)
    gan = build_gan(
        spec({"name": "dcgan", "base_channels": 4, "latent_dim": 8}, {"name": "nsgan"}, 16, ema_decay=0.5), info, CPU
    )
    assert gan.ema is not None
    before = [p.detach().clone() for p in gan.generator.parameters()]
    data = torch.rand(4, 1, 16, 16) * 2 - 1
    gan.train_step(lambda: (data, None))
    # θ_ema = d·θ_ema + (1−d)·θ with the warm-up d = min(decay, (1 + n) / (10 + n)): 0.1 at the first update
    for ema, old, new in zip(gan.ema.model.parameters(), before, gan.generator.parameters(), strict=True):
        assert torch.allclose(ema, 0.1 * old + 0.9 * new.detach())
    later = [p.detach().clone() for p in gan.ema.model.parameters()]
    gan.ema.update(gan.generator, 100)  # past the warm-up: d = decay
    for ema, old, new in zip(gan.ema.model.parameters(), later, gan.generator.parameters(), strict=True):
        assert torch.allclose(ema, 0.5 * old + 0.5 * new.detach())
    inputs = gan.fixed_inputs(4, torch.Generator().manual_seed(0))
    out = gan.generate(inputs)
    assert not out.requires_grad and gan.generator.training
    gan.ema.model.eval()
    with torch.no_grad():
        assert torch.allclose(out, gan.ema.model(**inputs))


def test_fixed_inputs_cycle_labels_and_the_first_categorical_code() -> None:
    ring8 = BUILTIN_DATASETS["ring8"]
    cgan = build_gan(spec({"name": "mlp", "hidden": 8}, {"name": "cgan"}), ring8, CPU)
    inputs = cgan.fixed_inputs(10, torch.Generator().manual_seed(1))
    assert inputs["labels"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    assert torch.equal(cgan.snapshot_labels(inputs), inputs["labels"])
    again = cgan.fixed_inputs(10, torch.Generator().manual_seed(1))
    assert torch.equal(again["z"], inputs["z"])
    info = build_gan(spec({"name": "mlp", "hidden": 8}, {"name": "infogan", "categorical_codes": [3]}), ring8, CPU)
    codes = info.fixed_inputs(7, torch.Generator().manual_seed(0))
    assert codes["categorical"][:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert codes["continuous"].shape == (7, 2) and codes["continuous"].abs().max() <= 1
    plain = build_gan(spec({"name": "mlp", "hidden": 8}, {"name": "nsgan"}), ring8, CPU)
    assert plain.snapshot_labels(plain.fixed_inputs(3, torch.Generator())) is None


def test_weights_are_flat_cpu_tensors_that_safetensors_accepts() -> None:
    gan = build_gan(
        spec({"name": "resnet", "base_channels": 4}, {"name": "cgan", "base": "hinge"}, 16, ema_decay=0.9),
        images(1, 16),
        CPU,
    )
    weights = gan.weights()
    prefixes = {name.split(".")[0] for name in weights}
    assert prefixes == {"generator", "discriminator", "generator_ema"}
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in weights.values())
    loaded = load_safetensors(save_safetensors(weights))
    generator = {k.removeprefix("generator."): v for k, v in loaded.items() if k.startswith("generator.")}
    gan.generator.load_state_dict(generator)


def test_a_spec_that_cannot_work_is_refused_with_its_reason() -> None:
    with pytest.raises(ValueError, match="image architecture"):
        build_gan(spec({"name": "dcgan"}, {"name": "nsgan"}), BUILTIN_DATASETS["ring8"], CPU)
    with pytest.raises(ValueError, match="labelled"):
        build_gan(spec({"name": "mlp"}, {"name": "cgan"}, None), DatasetInfo(kind="points", shape=(2,)), CPU)


# ------------------------------------------------------------------ initialisation, as each paper's code


def weight(layer: nn.Module) -> torch.Tensor:
    """A layer's own weight (under spectral norm: the unnormalised original)."""
    if hasattr(layer, "parametrizations"):
        return layer.parametrizations.weight.original.detach()
    return layer.weight.detach()


def weight_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d | nn.Embedding)]


def assert_uniform(w: torch.Tensor, bound: float) -> None:
    """Drawn from U(±bound): inside it, reaching near it, with the uniform's std bound/√3."""
    assert float(w.abs().max()) <= bound * (1 + 1e-6)
    assert float(w.abs().max()) > 0.9 * bound
    assert float(w.std()) == pytest.approx(bound / 3**0.5, rel=0.1)


def glorot_bound(w: torch.Tensor, gain: float = 1.0) -> float:
    receptive = w[0][0].numel() if w.dim() > 2 else 1
    fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
    return gain * (6 / (fan_in + fan_out)) ** 0.5


def assert_biases_zero(net: nn.Module) -> None:
    for layer in weight_layers(net):
        if getattr(layer, "bias", None) is not None:
            assert not layer.bias.any()


@pytest.mark.parametrize("loss", [{"name": "cgan"}, {"name": "wgan-gp"}])
def test_dcgan_weights_are_normal_002_and_norm_gains_normal_1_002(loss: dict[str, Any]) -> None:
    torch.manual_seed(0)
    gan = build_gan(spec({"name": "dcgan", "base_channels": 16, "latent_dim": 16}, loss, 32), images(1, 32), CPU)
    g, d = gan.generator, gan.discriminator
    weights = torch.cat([weight(m).flatten() for net in (g.body, d) for m in weight_layers(net)])
    assert weights.numel() > 50_000
    assert float(weights.mean()) == pytest.approx(0.0, abs=1e-3)
    assert float(weights.std()) == pytest.approx(0.02, rel=0.02)  # PyTorch's default here: std 0.009–0.144
    for net in (g.body, d):
        for layer in weight_layers(net):  # every layer, the smallest too (D's head, the projection)
            assert float(weight(layer).std()) == pytest.approx(0.02, rel=0.35), layer
    norms = [m for net in (g, d) for m in net.modules() if isinstance(m, nn.BatchNorm2d | nn.GroupNorm)]
    assert any(isinstance(m, nn.GroupNorm) for m in norms) == (loss["name"] == "wgan-gp")  # layer norm in a GP critic
    gains = torch.cat([m.weight.detach() for m in norms])
    assert float(gains.mean()) == pytest.approx(1.0, abs=0.005)
    assert float(gains.std()) == pytest.approx(0.02, rel=0.2)
    assert not torch.cat([m.bias.detach() for m in norms]).any()
    assert_biases_zero(g)
    assert_biases_zero(d)
    if loss["name"] == "cgan":  # G's label embedding is an input code beside z ~ N(0, I): PyTorch's N(0, 1)
        assert g.embedding is not None
        assert float(g.embedding.weight.detach().std()) == pytest.approx(1.0, rel=0.25)


def test_resnet_is_glorot_uniform_gain_sqrt2_in_residual_branches_and_1_elsewhere_as_sngan() -> None:
    from worker.gan.networks.resnet import DiscriminatorBlock, GeneratorBlock

    torch.manual_seed(0)
    arch = {"name": "resnet", "base_channels": 32, "latent_dim": 16}
    gan = build_gan(spec(arch, {"name": "cgan"}, 32), images(3, 32), CPU)
    g, d = gan.generator, gan.discriminator
    residual = {
        id(layer)
        for net in (g, d)
        for block in net.modules()
        if isinstance(block, GeneratorBlock | DiscriminatorBlock)
        for layer in weight_layers(block.residual)
    }
    assert len(residual) == 2 * 3 + 2 * 3  # two convs per block, three blocks each at 32 px
    checked = 0
    for layer in weight_layers(g.body) + weight_layers(d):
        w = weight(layer)
        gain = 2**0.5 if id(layer) in residual else 1.0
        if w.numel() >= 256:  # the statistics of tiny layers say little (D's 1×1 shortcut from 3 channels)
            assert_uniform(w, glorot_bound(w, gain))
            checked += 1
        else:
            assert float(w.abs().max()) <= glorot_bound(w, gain) * (1 + 1e-6)
    assert checked >= 15  # residual convs, shortcuts, G's linear and output conv, D's head and projection
    assert_biases_zero(g.body)
    assert_biases_zero(d)
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
    # Spectral norm registered again after the draw: its estimate σ fits the new weights (W/σ has norm 1).
    for layer in weight_layers(d):
        if hasattr(layer, "parametrizations"):
            normalised = layer.weight.detach().reshape(layer.weight.shape[0], -1)
            assert float(torch.linalg.matrix_norm(normalised, ord=2)) == pytest.approx(1.0, rel=0.05), layer


def test_mlp_keeps_pytorchs_default_uniform_init_measured_better_than_the_toy_codes() -> None:
    torch.manual_seed(0)
    arch = {"name": "mlp", "hidden": 256, "depth": 3}
    gan = build_gan(spec(arch, {"name": "infogan"}), BUILTIN_DATASETS["ring8"], CPU)
    g, d = gan.generator, gan.discriminator
    layers = weight_layers(g.body) + weight_layers(d)
    assert len(layers) == 4 + 3 + 1 + 2  # G's four; D's three, its head and Q's two
    for layer in layers:  # nn.Linear's default: weights and biases U(±1/√fan_in)
        w = weight(layer)
        bound = w.shape[1] ** -0.5
        assert_uniform(w, bound)
        assert float(layer.bias.detach().abs().max()) <= bound and layer.bias.any()
