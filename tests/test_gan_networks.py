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
    for ema, old, new in zip(gan.ema.model.parameters(), before, gan.generator.parameters(), strict=True):
        assert torch.allclose(ema, 0.5 * old + 0.5 * new.detach())  # θ_ema = d·θ_ema + (1−d)·θ
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
