"""The catalog: every loss, architecture and built-in data set by name, with defaults and papers.

The classes themselves are the schema (models/spec.py); this module names them,
says what the service derives from them (data-dependent defaults, each
architecture's initialisation and discriminator normalisation) and builds what
`GET /v1/catalog` serves. No torch: the worker resolves the names to code, and
tests hold the two in step.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from models.datasets import BUILTIN_DATASETS
from models.spec import (
    BASE_LOSS_CLASSES,
    BEGANLoss,
    CGANLoss,
    DCGANArchitecture,
    InfoGANLoss,
    MLPArchitecture,
    ResNetArchitecture,
    StrictModel,
)

LOSS_CLASSES: dict[str, type[StrictModel]] = {
    **BASE_LOSS_CLASSES,
    "began": BEGANLoss,
    "cgan": CGANLoss,
    "infogan": InfoGANLoss,
}
# Losses that wrap an adversarial base loss (`loss.base`) and take its settings.
WRAPPED_LOSSES = frozenset({"cgan", "infogan"})
# Losses whose D is trained with a per-sample gradient penalty on interpolates or perturbed reals.
GRADIENT_PENALTY_LOSSES = frozenset({"wgan-gp", "dragan"})

ARCHITECTURE_CLASSES: dict[str, type[StrictModel]] = {
    "mlp": MLPArchitecture,
    "dcgan": DCGANArchitecture,
    "resnet": ResNetArchitecture,
}
IMAGE_ARCHITECTURES = frozenset({"dcgan", "resnet"})
# Architectures that can build BEGAN's auto-encoder discriminator.
AUTOENCODER_ARCHITECTURES = frozenset({"mlp", "dcgan"})

# How each architecture initialises its networks (worker/gan/networks; another engineer's code follows these).
ARCHITECTURE_INIT: dict[str, str] = {
    "mlp": "PyTorch default (Kaiming uniform), as the WGAN-GP toy code's Linear layers",
    "dcgan": "N(0, 0.02) conv/linear weights, batch-norm weights N(1, 0.02), biases 0 (Radford et al. 2015)",
    "resnet": "as the SNGAN official code (Glorot uniform, gain √2 in residual blocks)",
}

DiscriminatorNorm = Literal["batch", "layer", "none"]
# The normalisation layers in D's body, unpenalised and under a per-sample gradient penalty (WGAN-GP,
# DRAGAN, R1), where batch norm would couple the samples (GAN_REFERENCE.md). The MLP body has none;
# SNGAN's residual critic has none unless penalised. A warm start must keep D's layers, so admission
# compares these (worker/gan/factory.py builds them; tests/test_admission.py holds the two in step).
DISCRIMINATOR_NORM: dict[str, dict[bool, DiscriminatorNorm]] = {
    "mlp": {False: "none", True: "none"},
    "dcgan": {False: "batch", True: "layer"},
    "resnet": {False: "none", True: "layer"},
}

# λ of the gradient penalties (WGAN-GP, DRAGAN) when a spec leaves it unset: the papers' 10, but 0.1
# on 2-D points, the WGAN-GP authors' toy setting ("smaller lambda makes things faster for toy
# tasks"). At 10 both collapse on ring8 within 5k steps (bench/ZOO_RESULTS.md).
PAPER_GP_WEIGHT, TOY_GP_WEIGHT = 10.0, 0.1
# Samples per snapshot when a spec leaves training.sample_count unset: an 8×8 grid of images, or the
# 2,500 points the PacGAN protocol evaluates (GAN_REFERENCE.md).
DEFAULT_IMAGE_SAMPLES, DEFAULT_POINT_SAMPLES = 64, 2500


def default_gp_weight(data_shape: tuple[int, ...]) -> float:
    """The penalty weight λ for data whose one example has `data_shape`, when the spec leaves it unset.

    0.1 for 2-D points (Gulrajani et al. 2017's toy code), else the papers' 10.
    """
    return TOY_GP_WEIGHT if tuple(data_shape) == (2,) else PAPER_GP_WEIGHT


def default_sample_count(kind: Literal["points", "images"]) -> int:
    """Samples per snapshot for a data set of this kind when the spec leaves it unset (64 images, 2,500 points)."""
    return DEFAULT_IMAGE_SAMPLES if kind == "images" else DEFAULT_POINT_SAMPLES


# The quality figure of each snapshot (worker/quality.py computes them; tests hold the two in step).
POINT_MEASURES = ("modes_covered", "hq_fraction", "reverse_kl")  # PacGAN's, on ring8 and grid25
INCEPTION_MEASURES = ("fid", "kid")


def quality_measures(
    kind: Literal["points", "images"], loss: str, *, dataset: str = "", labelled: bool, inception: bool
) -> list[str]:
    """The figures a job's snapshots report, primary first: points (`dataset` ring8 or grid25) PacGAN's
    three; labelled images `fd` (+ `class_accuracy` for cgan, `code_purity` and `code_nmi` for infogan);
    images `fid` and `kid` too when the workers have Inception weights (`inception`). [] when none."""
    if kind == "points":
        return list(POINT_MEASURES) if dataset in ("ring8", "grid25") else []
    measures = []
    if labelled:
        measures.append("fd")
        measures += {"cgan": ["class_accuracy"], "infogan": ["code_purity", "code_nmi"]}.get(loss, [])
    return measures + (list(INCEPTION_MEASURES) if inception else [])


def quality_section(inception: bool) -> dict[str, Any]:
    """The catalog's `quality`: which figure a job on each kind of data reports, and how it is measured."""
    return {
        "points": {
            "measures": list(POINT_MEASURES),
            "description": "the built-in ring8 and grid25 (PacGAN protocol, on each snapshot's samples)",
        },
        "labelled_images": {
            "measures": ["fd"],
            "by_loss": {"cgan": ["class_accuracy"], "infogan": ["code_purity", "code_nmi"]},
            "description": "fd: Fréchet distance (lower is better) in the 64-d features of a small classifier trained "
            "on the data set itself (digits, or an upload with labels), 500 generated against up to 1,000 real "
            "images; class_accuracy / code_purity by the same classifier",
        },
        "inception": {
            "enabled": inception,
            "measures": list(INCEPTION_MEASURES),
            "description": "fid and kid (Bińkowski et al. 2018, cubic kernel) in the FID Inception-v3's pool3 features, "
            "every image data set, when the workers have GANFORGE_INCEPTION_WEIGHTS; 500 images on a GPU, 100 "
            "on a CPU (compare FIDs at equal counts only)",
        },
    }


def _tag(cls: type[StrictModel]) -> str:
    return cls.model_fields["name"].annotation.__args__[0]  # type: ignore[union-attr,no-any-return]


def _defaults(cls: type[StrictModel]) -> dict[str, Any]:
    return {k: v for k, v in cls(name=_tag(cls)).model_dump(mode="json").items() if k != "name"}  # type: ignore[call-arg]


def describe(cls: type[StrictModel]) -> dict[str, Any]:
    """A loss's or an architecture's catalog entry: its paper (the class docstring), defaults and parameters."""
    schema = cls.model_json_schema()
    return {
        "paper": inspect.getdoc(cls),
        "defaults": _defaults(cls),
        "parameters": {k: v for k, v in schema.get("properties", {}).items() if k != "name"},
    }


def catalog(inception: bool = False) -> dict[str, Any]:
    """What `GET /v1/catalog` serves: every loss, architecture (with its init) and built-in data set, and the
    quality figures jobs report (`inception`: the service has GANFORGE_INCEPTION_WEIGHTS)."""
    architectures = {
        name: {
            **describe(cls),
            "init": ARCHITECTURE_INIT[name],
            "discriminator_norm": {
                "default": DISCRIMINATOR_NORM[name][False],
                "gradient_penalty": DISCRIMINATOR_NORM[name][True],
            },
        }
        for name, cls in ARCHITECTURE_CLASSES.items()
    }
    return {
        "losses": {name: describe(cls) for name, cls in LOSS_CLASSES.items()},
        "architectures": architectures,
        "datasets": {name: info.model_dump(mode="json") for name, info in BUILTIN_DATASETS.items()},
        "quality": quality_section(inception),
    }
