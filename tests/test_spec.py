"""The job spec: each loss's defaults are its paper's (GAN_REFERENCE.md), wrappers inherit their base's."""

from __future__ import annotations

import copy
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from models.admission import check_compatible
from models.datasets import BUILTIN_DATASETS
from models.records import DB_INT_MAX
from models.spec import BASE_LOSS_CLASSES, JobSpec


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
    loss: Any = spec({"name": "cgan", "base": "wgan-gp", "gp_weight": 1.0}).loss
    assert (loss.n_critic, loss.betas, loss.gp_weight, loss.lr_d) == (5, (0.0, 0.9), 1.0, 1e-4)
    base = loss.base_loss()
    assert base.name == "wgan-gp" and base.gp_weight == 1.0
    info: Any = spec({"name": "infogan", "base": "lsgan"}).loss
    assert (info.lr_g, info.lr_d, info.a, info.b) == (2e-4, 2e-4, 0.0, 1.0)


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"name": "cgan", "clip_value": 0.1}, "clip_value does not apply to base loss 'nsgan'"),
        ({"name": "infogan", "categorical_codes": [], "continuous_codes": 0}, "at least one"),
        ({"name": "wgan", "lr_d": float("nan")}, "finite"),
        ({"name": "wgan-gp", "betas": [0.5, 1.5]}, "less than 1"),
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


# --------------------------------------------------------------------------- wrapped losses on every base

OPTIMISER_FIELDS = ("optimizer", "lr_g", "lr_d", "betas", "n_critic")
# InfoGAN's paper optimisers (Chen et al. 2016, official code), on its paper's base only.
INFOGAN_PAPER = {"optimizer": "adam", "lr_g": 1e-3, "lr_d": 2e-4, "betas": (0.5, 0.999), "n_critic": 1}


def optimiser(loss: Any) -> dict[str, Any]:
    return {field: getattr(loss, field) for field in OPTIMISER_FIELDS}


@pytest.mark.parametrize("wrapper", ["cgan", "infogan"])
@pytest.mark.parametrize("base", sorted(BASE_LOSS_CLASSES))
def test_a_wrapped_loss_runs_its_bases_optimiser_unless_the_spec_overrides(wrapper: str, base: str) -> None:
    loss: Any = spec({"name": wrapper, "base": base}).loss
    base_defaults = BASE_LOSS_CLASSES[base](name=base)  # type: ignore[call-arg]
    expected = INFOGAN_PAPER if (wrapper, base) == ("infogan", "nsgan") else optimiser(base_defaults)
    assert optimiser(loss) == expected
    assert optimiser(loss.base_loss()) == expected
    # The base's own settings come along (clip value, penalty target, ...), the stored form keeps them.
    for field in set(BASE_LOSS_CLASSES[base].model_fields) - set(OPTIMISER_FIELDS) - {"name"}:
        assert getattr(loss, field) == getattr(base_defaults, field), field
    stored = spec({"name": wrapper, "base": base}).model_dump(mode="json")
    assert optimiser(JobSpec.model_validate(stored).loss) == expected
    overrides = {"optimizer": "rmsprop", "lr_g": 3e-3, "lr_d": 4e-3, "betas": (0.1, 0.2), "n_critic": 7}
    assert optimiser(spec({"name": wrapper, "base": base, **overrides}).loss) == overrides


def test_infogan_on_wgan_runs_rmsprop_at_the_wgan_rates() -> None:
    loss: Any = spec({"name": "infogan", "base": "wgan"}).loss
    assert (loss.optimizer, loss.lr_g, loss.lr_d, loss.n_critic, loss.clip_value) == ("rmsprop", 5e-5, 5e-5, 5, 0.01)
    assert spec({"name": "infogan", "base": "wgan", "lr_g": 1e-3}).loss.lr_g == 1e-3


# --------------------------------------------------------------------------- integer bounds

BASE_BODY: dict[str, Any] = {
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp"},
    "loss": {"name": "nsgan"},
}
# Past what a BIGINT holds (2^63 - 1), past 2^64, far past, and below the most negative BIGINT.
HUGE_INTEGERS = [DB_INT_MAX + 1, 2**64, 10**20, -(2**64)]
Trail = tuple[tuple[str | int, dict[str, Any] | None], ...]


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated / Optional / union) type."""
    if get_origin(annotation) is Annotated:
        return _members(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [annotation]


def _is_integer(annotation: Any) -> bool:
    if annotation is int:
        return True
    return get_origin(annotation) is Literal and all(type(arg) is int for arg in get_args(annotation))


def _stub(model: type[BaseModel]) -> dict[str, Any]:
    """The least a body needs of `model`: its tag, and a string for each other required field."""
    stub: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if field.is_required():
            literals = [m for m in _members(field.annotation) if get_origin(m) is Literal]
            stub[name] = get_args(literals[0])[0] if literals else "x"
    return stub


def integer_fields(model: type[BaseModel] = JobSpec, trail: Trail = ()) -> Iterator[Trail]:
    """Every place a client can put an integer in a spec, walked from the pydantic model (every union member)."""
    for name, field in model.model_fields.items():
        for member in _members(field.annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                yield from integer_fields(member, (*trail, (name, _stub(member))))
            elif _is_integer(member):
                yield (*trail, (name, None))
            elif get_origin(member) in (list, tuple) and any(_is_integer(m) for m in _members(get_args(member)[0])):
                yield (*trail, (name, None), (0, None))


def body_with(trail: Trail, value: int) -> tuple[dict[str, Any], str]:
    """A valid spec body but for `value` at `trail`, and the field path an error must name."""
    body = copy.deepcopy(BASE_BODY)
    node: Any = body
    for (key, stub), (next_key, _) in zip(trail, [*trail[1:], (None, None)], strict=True):
        if next_key is None:
            node[key] = value
        elif isinstance(next_key, int):
            node[key] = [value]
            break
        else:
            if stub is not None and (not isinstance(node.get(key), dict) or node[key].get("name") != stub.get("name")):
                node[key] = dict(stub)
            node = node[key]
    return body, ".".join(str(key) for key, _ in trail)


INTEGER_CASES = [body_with(trail, value) for trail in integer_fields() for value in HUGE_INTEGERS]
INTEGER_IDS = [f"{'.'.join(str(k) for k, _ in trail)}={value}" for trail in integer_fields() for value in HUGE_INTEGERS]


def test_the_walk_finds_every_kind_of_integer_field() -> None:
    paths = {path for _, path in INTEGER_CASES}
    expected = {
        "training.steps",
        "training.seed",
        "training.sample_count",
        "every.metrics",
        "every.samples",
        "every.checkpoint",
        "init_from.step",
        "loss.n_critic",
        "loss.categorical_codes.0",
        "loss.continuous_codes",
        "architecture.latent_dim",
        "architecture.base_channels",
        "dataset.resize",
    }
    assert expected <= paths
    assert len(INTEGER_CASES) >= 4 * 40  # each union member's fields: 40 body places in this schema


def _user_path(loc: tuple[Any, ...], body: dict[str, Any]) -> str:
    # pydantic puts a discriminated union's tag into the path (loss.infogan.n_critic); users wrote loss.n_critic.
    parts = [str(part) for i, part in enumerate(loc) if not (i == 1 and part == body.get(loc[0], {}).get("name"))]
    return ".".join(parts)


@pytest.mark.parametrize(("body", "path"), INTEGER_CASES, ids=INTEGER_IDS)
def test_an_integer_past_what_the_store_holds_is_refused_at_its_field(body: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as refused:
        JobSpec.model_validate(body)
    assert [_user_path(error["loc"], body) for error in refused.value.errors()] == [path]
