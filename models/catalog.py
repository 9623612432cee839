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
    images `fid` and `kid` too when the worker running the job has Inception weights (`inception`). [] when none."""
    if kind == "points":
        return list(POINT_MEASURES) if dataset in ("ring8", "grid25") else []
    measures = []
    if labelled:
        measures.append("fd")
        measures += {"cgan": ["class_accuracy"], "infogan": ["code_purity", "code_nmi"]}.get(loss, [])
    return measures + (list(INCEPTION_MEASURES) if inception else [])


def quality_section() -> dict[str, Any]:
    """The catalog's `quality`: which figure a job on each kind of data reports, and how it is measured.

    Whether a job reports fid/kid depends on the worker that runs it (its GANFORGE_INCEPTION_WEIGHTS), not on
    the API process that serves the catalog, so the catalog cannot say it for a job: the job's own records
    (its metric series, each sample's `evaluation`) are what its worker reported."""
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
            "measures": list(INCEPTION_MEASURES),
            "description": "fid and kid (Bińkowski et al. 2018, cubic kernel) in the FID Inception-v3's pool3 features, "
            "on every image data set, reported for a job when the worker that runs it has GANFORGE_INCEPTION_WEIGHTS "
            "set (workers may differ, and this API process cannot see theirs); 500 images on a GPU, 100 on a CPU "
            "(compare FIDs at equal counts only)",
            "source_of_truth": "a job's metrics (GET /v1/jobs/{id}/metrics lists every series its worker recorded) "
            "and each of its samples' `evaluation` name the figures its worker reported",
        },
    }


# What training.watch takes for divergence on each loss (worker/watch.py's d_wins_test; tests hold the two in step).
# A non-finite value is divergence on every loss. D "winning" with G's gradient vanishing means something only where
# D's score has an end to win at; a critic's (wgan, wgan-gp) is an unbounded distance estimate, BEGAN's D an
# auto-encoder.
_LOGIT = "mean logit >= logit(0.99) on real and <= logit(0.01) on fake (D's score is the logit of real)"
_VANISHING = ", with G's gradient vanishing"
WATCH_DIVERGENCE: dict[str, str] = {
    "minimax": f"non-finite values; D winning: {_LOGIT}{_VANISHING}",
    "nsgan": f"non-finite values; D winning: {_LOGIT}{_VANISHING}",
    "dragan": f"non-finite values; D winning on its NS loss: {_LOGIT}{_VANISHING}",
    "lsgan": "non-finite values; D winning: mean outputs within 10% of |b - a| of their targets b (real) and a "
    f"(fake){_VANISHING}",
    "hinge": f"non-finite values; D winning: mean real score >= 1 and fake <= -1 (both margins met, D's loss 0)"
    f"{_VANISHING}",
    "wgan": "non-finite values only: a critic's score is an unbounded distance estimate with no end to win at; "
    "weight clipping (c = 0.01) makes G's gradient norm ~1e-5 in a healthy run; the estimate rises while the "
    "critic learns and its scale is set by c and the data: no bound to test it against",
    "wgan-gp": "non-finite values only: a critic's score is an unbounded distance estimate with no end to win at; "
    "G's gradient size is set by the penalty's Lipschitz target, not by the critic's confidence; the estimate "
    "rises while the critic learns: no bound to test it against",
    "began": "non-finite values only: D is an auto-encoder scoring reconstructions, not a real/fake probability; "
    "its balance term k_t is clipped to [0, 1] by design",
    "cgan": "as its base loss (loss.base)",
    "infogan": "as its base loss (loss.base)",
}


def watch_section() -> dict[str, Any]:
    """The catalog's `watch`: what training.watch reports as collapse and, per loss, as divergence."""
    return {
        "collapse": {
            "description": "mode dropping (PacGAN's modes metric): at each snapshot after warmup_steps, the modes "
            "holding the samples (2-D mixtures), the Fréchet distance (images with one), or the samples' mean "
            "pairwise distance over the data's; patience snapshots in a row below collapse_floor or collapse_drop "
            "of the run's best",
            "settings": ["warmup_steps", "collapse_floor", "collapse_drop", "patience"],
        },
        "divergence": {
            "description": "a non-finite value, on every loss (the job fails); on losses whose D can win, also D "
            "winning completely with G's gradient vanishing (Arjovsky & Bottou 2017): its norm under vanishing_grad "
            "of its own scale in the run (its largest while D was not winning, never an absolute norm) at every "
            "reading for vanishing_steps steps",
            "settings": ["vanishing_grad", "vanishing_steps"],
            "by_loss": dict(WATCH_DIVERGENCE),
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


def catalog() -> dict[str, Any]:
    """What `GET /v1/catalog` serves: every loss, architecture (with its init) and built-in data set, and the
    quality figures jobs report (fid/kid: when the job's worker has Inception weights; see quality_section), and
    what training.watch reports (watch_section)."""
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
        "quality": quality_section(),
        "watch": watch_section(),
    }
