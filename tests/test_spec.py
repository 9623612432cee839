"""The job spec: each loss's defaults are its paper's (GAN_REFERENCE.md), wrappers inherit their base's."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from models.datasets import BUILTIN_DATASETS
from models.spec import JobSpec, check_compatible


def spec(loss: dict[str, Any], **parts: Any) -> JobSpec:
    body = {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp"}, "loss": loss, **parts}
    return JobSpec.model_validate(body)


PAPER_DEFAULTS = {
    "minimax": {"optimizer": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.5, 0.999), "n_critic": 1},
    "nsgan": {"optimizer": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.5, 0.999), "n_critic": 1},
    "lsgan": {"optimizer": "adam", "lr_d": 2e-4, "betas": (0.5, 0.999), "a": 0.0, "b": 1.0, "c": 1.0},
    "wgan": {"optimizer": "rmsprop", "lr_g": 5e-5, "lr_d": 5e-5, "n_critic": 5, "clip_value": 0.01},
    "wgan-gp": {"optimizer": "adam", "lr_g": 1e-4, "lr_d": 1e-4, "betas": (0.0, 0.9), "n_critic": 5, "gp_weight": None},
    "dragan": {
        "optimizer": "adam",
        "lr_d": 1e-4,
        "betas": (0.5, 0.9),
        "gp_weight": None,
        "k": 1.0,
        "perturb_scale": 0.5,
    },
    "hinge": {"optimizer": "adam", "lr_d": 2e-4, "betas": (0.0, 0.9), "n_critic": 5},
    "began": {"optimizer": "adam", "lr_d": 1e-4, "betas": (0.5, 0.999), "gamma": 0.5, "lambda_k": 0.001, "k0": 0.0},
    "cgan": {"base": "nsgan", "lr_d": 2e-4, "betas": (0.5, 0.999), "conditioning": "projection"},
    "infogan": {
        "base": "nsgan",
        "lr_g": 1e-3,
        "lr_d": 2e-4,
        "betas": (0.5, 0.999),
        "info_lambda": 1.0,
        "categorical_codes": [10],
    },
}


@pytest.mark.parametrize("name", sorted(PAPER_DEFAULTS))
def test_each_loss_defaults_to_its_paper(name: str) -> None:
    loss = spec({"name": name}).loss
    for field, expected in PAPER_DEFAULTS[name].items():
        assert getattr(loss, field) == expected, field


def test_a_wrapped_loss_takes_its_base_defaults_and_overrides() -> None:
    loss = spec({"name": "cgan", "base": "wgan-gp", "gp_weight": 1.0}).loss
    assert (loss.n_critic, loss.betas, loss.gp_weight, loss.lr_d) == (5, (0.0, 0.9), 1.0, 1e-4)
    base = loss.base_loss()
    assert base.name == "wgan-gp" and base.gp_weight == 1.0
    info = spec({"name": "infogan", "base": "lsgan"}).loss
    assert (info.lr_g, info.lr_d, info.a, info.b) == (1e-3, 2e-4, 0.0, 1.0)


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"name": "cgan", "clip_value": 0.1}, "clip_value does not apply to base loss 'nsgan'"),
        ({"name": "infogan", "categorical_codes": [], "continuous_codes": 0}, "at least one"),
        ({"name": "wgan", "lr_d": float("nan")}, "finite"),
        ({"name": "wgan-gp", "betas": [0.5, 1.5]}, "less than or equal to 1"),
        ({"name": "began", "gamma": 0}, "greater than 0"),
    ],
)
def test_impossible_loss_settings_are_refused(loss: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(loss)


def test_compatibility_with_the_data_set() -> None:
    digits = BUILTIN_DATASETS["digits"]
    ok = spec({"name": "cgan"}, dataset={"builtin": "digits", "resize": 32}, architecture={"name": "dcgan"})
    assert check_compatible(ok, digits) == []
    began_resnet = spec({"name": "began"}, dataset={"builtin": "digits", "resize": 16}, architecture={"name": "resnet"})
    assert [p.loc for p in check_compatible(began_resnet, digits)] == [("architecture", "name")]
    packed_info = spec({"name": "infogan"}, training={"pack": 2, "batch_size": 64})
    assert [p.loc for p in check_compatible(packed_info, BUILTIN_DATASETS["ring8"])] == [("training", "pack")]
    resize_points = spec({"name": "nsgan"}, dataset={"builtin": "ring8", "resize": 16})
    assert [p.loc for p in check_compatible(resize_points, BUILTIN_DATASETS["ring8"])] == [("dataset", "resize")]
