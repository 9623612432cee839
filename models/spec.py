"""The job spec: what a client posts to `POST /v1/jobs`.

Pure pydantic, no torch: the API validates names and numbers here, the worker
resolves the names to code (`worker/gan`). Every loss class carries its
paper's defaults (see shared GAN_REFERENCE.md); a spec may override any of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.datasets import BUILTIN_DATASETS, DatasetInfo


class StrictModel(BaseModel):
    """Unknown fields and NaN/inf numbers are refused everywhere in a spec."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


PositiveFloat = Annotated[float, Field(gt=0)]
UnitFloat = Annotated[float, Field(ge=0, le=1)]
Betas = tuple[UnitFloat, UnitFloat]
Optimizer = Literal["adam", "rmsprop"]

BuiltinName = Literal["ring8", "grid25", "spiral", "digits"]

# λ of the gradient penalties (WGAN-GP, DRAGAN) when a spec leaves it unset: the papers' 10, but 0.1
# on 2-D points, the WGAN-GP authors' toy setting ("smaller lambda makes things faster for toy
# tasks"). At 10 both collapse on ring8 within 5k steps (bench/ZOO_RESULTS.md).
PAPER_GP_WEIGHT, TOY_GP_WEIGHT = 10.0, 0.1
GP_WEIGHT_HELP = "penalty weight λ; unset: 10 (paper), 0.1 on 2-D points (the WGAN-GP toy code)"


def default_gp_weight(data_shape: tuple[int, ...]) -> float:
    """The penalty weight for data of this shape (one example) when the spec leaves it unset."""
    return TOY_GP_WEIGHT if tuple(data_shape) == (2,) else PAPER_GP_WEIGHT


# --------------------------------------------------------------------------- dataset


class DatasetRef(StrictModel):
    """Exactly one of `builtin` (a shipped data set) or `id` (an upload)."""

    builtin: BuiltinName | None = None
    id: str | None = Field(default=None, min_length=1, max_length=64)
    resize: Literal[8, 16, 32, 64] | None = Field(
        default=None, description="image data: resample to this square size (px)"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetRef:
        if (self.builtin is None) == (self.id is None):
            raise ValueError("give exactly one of 'builtin' or 'id'")
        return self


# --------------------------------------------------------------------------- architectures


class MLPArchitecture(StrictModel):
    """Fully connected G and D, for 2-D points and tabular rows."""

    name: Literal["mlp"]
    latent_dim: int = Field(default=2, ge=1, le=1024)
    hidden: int = Field(
        default=512,
        ge=4,
        le=8192,
        description="units per hidden layer (512 as in the WGAN-GP toy code; at 256 grid25 kept losing modes, see bench/ZOO_RESULTS.md)",
    )
    depth: int = Field(default=3, ge=1, le=16)
    spectral_norm: bool = Field(default=False, description="spectral norm on every layer of D (Miyato et al. 2018)")


class DCGANArchitecture(StrictModel):
    """Radford et al. 2015 convolutional G and D for 16/32/64 px images."""

    name: Literal["dcgan"]
    latent_dim: int = Field(default=100, ge=1, le=1024)
    base_channels: int = Field(default=64, ge=4, le=1024)


class ResNetArchitecture(StrictModel):
    """SNGAN-style residual G and D (Miyato et al. 2018) for images."""

    name: Literal["resnet"]
    latent_dim: int = Field(default=128, ge=1, le=1024)
    base_channels: int = Field(default=128, ge=4, le=1024)
    spectral_norm: bool = True


Architecture = Annotated[
    MLPArchitecture | DCGANArchitecture | ResNetArchitecture,
    Field(discriminator="name"),
]
ARCHITECTURE_CLASSES: dict[str, type[StrictModel]] = {
    "mlp": MLPArchitecture,
    "dcgan": DCGANArchitecture,
    "resnet": ResNetArchitecture,
}
IMAGE_ARCHITECTURES = frozenset({"dcgan", "resnet"})
# Architectures that can build BEGAN's auto-encoder discriminator.
AUTOENCODER_ARCHITECTURES = frozenset({"mlp", "dcgan"})


# --------------------------------------------------------------------------- losses


class _Optimisation(StrictModel):
    optimizer: Optimizer = "adam"
    lr_g: PositiveFloat = 2e-4
    lr_d: PositiveFloat = 2e-4
    betas: Betas = (0.5, 0.999)
    n_critic: int = Field(default=1, ge=1, le=100, description="D steps per G step")
    r1_gamma: float = Field(
        default=0.0, ge=0, description="R1 penalty weight on real data (Mescheder et al. 2018); 0 = off"
    )
    r1_every: int = Field(default=16, ge=1, le=1000, description="lazy R1: apply every N D steps")


class MinimaxLoss(_Optimisation):
    """Goodfellow et al. 2014 (arXiv 1406.2661), the saturating generator loss."""

    name: Literal["minimax"]


class NSGANLoss(_Optimisation):
    """Goodfellow et al. 2014 §3, the non-saturating generator loss."""

    name: Literal["nsgan"]


class LSGANLoss(_Optimisation):
    """Mao et al. 2017 (arXiv 1611.04076), a-b-c coding."""

    name: Literal["lsgan"]
    a: float = 0.0
    b: float = 1.0
    c: float = 1.0


class WGANLoss(_Optimisation):
    """Arjovsky et al. 2017 (arXiv 1701.07875), weight clipping."""

    name: Literal["wgan"]
    optimizer: Optimizer = "rmsprop"
    lr_g: PositiveFloat = 5e-5
    lr_d: PositiveFloat = 5e-5
    n_critic: int = Field(default=5, ge=1, le=100)
    clip_value: PositiveFloat = 0.01
    critic_boost: bool = Field(
        default=False,
        description="official code's schedule: 100 critic steps for the first 25 G steps and every 500th",
    )


class WGANGPLoss(_Optimisation):
    """Gulrajani et al. 2017 (arXiv 1704.00028)."""

    name: Literal["wgan-gp"]
    lr_g: PositiveFloat = 1e-4
    lr_d: PositiveFloat = 1e-4
    betas: Betas = (0.0, 0.9)
    n_critic: int = Field(default=5, ge=1, le=100)
    gp_weight: float | None = Field(default=None, ge=0, description=GP_WEIGHT_HELP)


class DRAGANLoss(_Optimisation):
    """Kodali et al. 2017 (arXiv 1705.07215), defaults of the official code."""

    name: Literal["dragan"]
    lr_g: PositiveFloat = 1e-4
    lr_d: PositiveFloat = 1e-4
    betas: Betas = (0.5, 0.9)
    gp_weight: float | None = Field(default=None, ge=0, description=GP_WEIGHT_HELP)
    k: float = Field(default=1.0, ge=0, description="target gradient norm")
    perturb_scale: PositiveFloat = Field(default=0.5, description="x_p = x + scale * std(x) * U[0,1)")


class HingeLoss(_Optimisation):
    """Lim & Ye 2017; defaults of SNGAN (Miyato et al. 2018)."""

    name: Literal["hinge"]
    betas: Betas = (0.0, 0.9)
    n_critic: int = Field(default=5, ge=1, le=100)


class BEGANLoss(_Optimisation):
    """Berthelot et al. 2017 (arXiv 1703.10717); D is an auto-encoder."""

    name: Literal["began"]
    lr_g: PositiveFloat = 1e-4
    lr_d: PositiveFloat = 1e-4
    gamma: float = Field(default=0.5, gt=0, le=1, description="diversity ratio")
    lambda_k: float = Field(default=0.001, ge=0, le=1, description="k_t learning rate")
    k0: UnitFloat = 0.0


AdversarialName = Literal["minimax", "nsgan", "lsgan", "wgan", "wgan-gp", "dragan", "hinge"]

_BASE_LOSSES: dict[str, type[_Optimisation]] = {
    "minimax": MinimaxLoss,
    "nsgan": NSGANLoss,
    "lsgan": LSGANLoss,
    "wgan": WGANLoss,
    "wgan-gp": WGANGPLoss,
    "dragan": DRAGANLoss,
    "hinge": HingeLoss,
}
# Fields a base loss may add on top of _Optimisation, all optional in a wrapper loss.
_BASE_SPECIFIC = sorted(
    {f for cls in _BASE_LOSSES.values() for f in cls.model_fields} - set(_Optimisation.model_fields) - {"name"}
)


class _WrappedLoss(StrictModel):
    """A loss built on an adversarial base loss; unset fields take the base's defaults."""

    base: AdversarialName = "nsgan"
    optimizer: Optimizer | None = None
    lr_g: PositiveFloat | None = None
    lr_d: PositiveFloat | None = None
    betas: Betas | None = None
    n_critic: int | None = Field(default=None, ge=1, le=100)
    r1_gamma: float | None = Field(default=None, ge=0)
    r1_every: int | None = Field(default=None, ge=1, le=1000)
    a: float | None = None
    b: float | None = None
    c: float | None = None
    clip_value: PositiveFloat | None = None
    critic_boost: bool | None = None
    gp_weight: float | None = Field(default=None, ge=0)
    k: float | None = Field(default=None, ge=0)
    perturb_scale: PositiveFloat | None = None

    # Defaults this loss sets over its base's (InfoGAN's paper has its own optimisers).
    _own_defaults: dict[str, Any] = {}

    @model_validator(mode="after")
    def _fill_from_base(self) -> _WrappedLoss:
        base_cls = _BASE_LOSSES[self.base]
        # A stored spec (model_dump) carries the inapplicable fields as None: only a value is stray.
        stray = [
            f
            for f in _BASE_SPECIFIC
            if f in self.model_fields_set and getattr(self, f) is not None and f not in base_cls.model_fields
        ]
        if stray:
            raise ValueError(f"{', '.join(stray)} does not apply to base loss '{self.base}'")
        base_defaults = base_cls(name=self.base)  # type: ignore[call-arg]
        for field in base_cls.model_fields:
            if field == "name" or field in self.model_fields_set:
                continue
            default = self._own_defaults.get(field, getattr(base_defaults, field))
            object.__setattr__(self, field, default)
        return self

    def base_loss(self) -> _Optimisation:
        """The adversarial loss this one wraps, with the resolved hyperparameters."""
        base_cls = _BASE_LOSSES[self.base]
        values = {f: getattr(self, f) for f in base_cls.model_fields if f != "name"}
        return base_cls(name=self.base, **values)  # type: ignore[call-arg]


class CGANLoss(_WrappedLoss):
    """Mirza & Osindero 2014 (arXiv 1411.1784); projection D of Miyato & Koyama 2018."""

    name: Literal["cgan"]
    conditioning: Literal["projection", "concat"] = "projection"


class InfoGANLoss(_WrappedLoss):
    """Chen et al. 2016 (arXiv 1606.03657); official optimisers G 1e-3, D 2e-4, beta1 0.5."""

    name: Literal["infogan"]
    info_lambda: float = Field(default=1.0, ge=0, description="weight of the mutual-information term")
    categorical_codes: list[Annotated[int, Field(ge=2, le=1000)]] = Field(
        default_factory=lambda: [10], max_length=8, description="number of categories of each categorical code"
    )
    continuous_codes: int = Field(default=2, ge=0, le=64)
    continuous_std: PositiveFloat = Field(default=1.0, description="fixed std of the factored Gaussian Q")
    _own_defaults = {"lr_g": 1e-3, "lr_d": 2e-4}

    @model_validator(mode="after")
    def _some_code(self) -> InfoGANLoss:
        if not self.categorical_codes and self.continuous_codes == 0:
            raise ValueError("infogan needs at least one categorical or continuous code")
        return self


Loss = Annotated[
    MinimaxLoss
    | NSGANLoss
    | LSGANLoss
    | WGANLoss
    | WGANGPLoss
    | DRAGANLoss
    | HingeLoss
    | BEGANLoss
    | CGANLoss
    | InfoGANLoss,
    Field(discriminator="name"),
]
LOSS_CLASSES: dict[str, type[StrictModel]] = {
    **_BASE_LOSSES,
    "began": BEGANLoss,
    "cgan": CGANLoss,
    "infogan": InfoGANLoss,
}
# Losses whose D output is a critic value, not a probability logit.
GRADIENT_PENALTY_LOSSES = frozenset({"wgan-gp", "dragan"})


# --------------------------------------------------------------------------- training


class Training(StrictModel):
    steps: int = Field(default=5000, ge=1, le=10_000_000, description="generator steps")
    batch_size: int = Field(default=256, ge=1, le=65_536)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    ema_decay: float | None = Field(
        default=None, gt=0, lt=1, description="EMA of G's weights; samples and checkpoints use the EMA copy"
    )
    pack: int = Field(default=1, ge=1, le=16, description="PacGAN: D sees this many samples at once")
    sample_count: int | None = Field(
        default=None, ge=1, le=10_000, description="samples per snapshot; default 64 images or 2,500 points"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_attempts: int = Field(default=3, ge=1, le=20)

    @model_validator(mode="after")
    def _pack_divides_batch(self) -> Training:
        if self.batch_size % self.pack:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of pack {self.pack}")
        return self


class Every(StrictModel):
    metrics: int = Field(default=10, ge=1, description="log metrics every N steps")
    samples: int = Field(default=500, ge=1, description="sample snapshot every N steps")
    checkpoint: int = Field(default=1000, ge=1, description="checkpoint every N steps (and at the end)")


class InitFrom(StrictModel):
    """Warm start: begin from another job's checkpoint (same architecture and loss networks)."""

    job: str = Field(min_length=1, max_length=64)
    step: int | Literal["latest"] = "latest"


class JobSpec(StrictModel):
    """A training job. Only dataset, architecture.name and loss.name are required."""

    name: str = Field(default="", max_length=200)
    dataset: DatasetRef
    architecture: Architecture
    loss: Loss
    training: Training = Field(default_factory=Training)
    every: Every = Field(default_factory=Every)
    init_from: InitFrom | None = None
    tags: dict[Annotated[str, Field(min_length=1, max_length=64)], Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=32
    )


# --------------------------------------------------------------------------- compatibility


class SpecProblem(Exception):
    """A spec that is well formed but cannot work with its data set."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def check_compatible(spec: JobSpec, info: DatasetInfo) -> list[SpecProblem]:
    """Every reason this spec cannot train on this data set (empty when it can)."""
    problems: list[SpecProblem] = []
    arch, loss = spec.architecture.name, spec.loss.name
    if info.kind == "points" and arch in IMAGE_ARCHITECTURES:
        problems.append(
            SpecProblem(
                ("architecture", "name"),
                f"'{arch}' is an image architecture; this data set holds points of dimension {info.shape[0]}: use 'mlp'",
            )
        )
    if info.kind == "images":
        size = spec.dataset.resize or info.shape[-1]
        if arch in IMAGE_ARCHITECTURES and size not in (16, 32, 64):
            problems.append(
                SpecProblem(
                    ("dataset", "resize"),
                    f"'{arch}' needs 16, 32 or 64 px images; the data set is {info.shape[-1]} px: set dataset.resize",
                )
            )
        if info.shape[-1] != info.shape[-2] and spec.dataset.resize is None:
            problems.append(SpecProblem(("dataset", "resize"), "images are not square: set dataset.resize"))
    elif spec.dataset.resize is not None:
        problems.append(SpecProblem(("dataset", "resize"), "resize applies to image data sets only"))
    if loss == "cgan" and not info.num_classes:
        problems.append(SpecProblem(("loss", "name"), "cgan needs a labelled data set; this one has no labels"))
    elif loss == "cgan" and info.num_classes == 1:
        problems.append(SpecProblem(("loss", "name"), "cgan needs at least 2 classes; this data set has only one"))
    if loss == "began" and arch not in AUTOENCODER_ARCHITECTURES:
        problems.append(
            SpecProblem(
                ("architecture", "name"),
                f"began needs an auto-encoder discriminator, which '{arch}' does not provide: use one of {sorted(AUTOENCODER_ARCHITECTURES)}",
            )
        )
    if spec.training.pack > 1 and loss in ("began", "infogan"):
        problems.append(SpecProblem(("training", "pack"), f"{loss} scores single samples: pack must be 1"))
    return problems


# Loss fields that change the networks' shapes (the rest are optimiser settings).
_NETWORK_FIELDS = ("name", "base", "conditioning", "categorical_codes", "continuous_codes")


def check_warm_start(spec: JobSpec, source: JobSpec) -> list[SpecProblem]:
    """Reasons the weights of a `source` job cannot initialise `spec`'s networks."""
    problems = []
    if spec.architecture != source.architecture:
        problems.append(SpecProblem(("init_from", "job"), "that job's architecture differs from this spec's"))
    mine, theirs = spec.loss.model_dump(), source.loss.model_dump()
    if any(mine.get(f) != theirs.get(f) for f in _NETWORK_FIELDS):
        problems.append(
            SpecProblem(
                ("init_from", "job"),
                "that job's loss builds different networks (name, base, conditioning or codes differ)",
            )
        )
    if spec.training.pack != source.training.pack:
        problems.append(SpecProblem(("init_from", "job"), "that job's training.pack differs (D's input size)"))
    return problems


def resolve_dataset_info(ref: DatasetRef) -> DatasetInfo | None:
    """The description of a built-in data set (None for an upload: ask the store)."""
    return BUILTIN_DATASETS[ref.builtin] if ref.builtin else None
