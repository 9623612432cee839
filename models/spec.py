"""The job spec schema: what a client posts to `POST /v1/jobs`.

Pure pydantic, no torch: the API validates names and numbers here, the worker
resolves the names to code (`worker/gan`). Every loss class carries its
paper's defaults (see shared GAN_REFERENCE.md); a spec may override any of them.
The names and what the catalog serves are in models/catalog.py; whether a spec
may run (its data set, warm start, data-dependent defaults) in models/admission.py.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from models.quotas import PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN


class StrictModel(BaseModel):
    """Unknown fields and NaN/inf numbers are refused everywhere in a spec."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Every float reaches torch as float32: beyond its largest finite value it overflows (torch refuses it at step 0).
FLOAT32_MAX = 3.4028234663852886e38


def within_float32(value: float) -> float:
    """`value` when float32 holds it (|value| <= FLOAT32_MAX); else ValueError (pydantic: 422 naming the field)."""
    if abs(value) > FLOAT32_MAX:
        raise ValueError(f"must be within ±{FLOAT32_MAX:.7g}, the largest float32 (training runs in float32)")
    return value


# Every number of a spec is a JSON number as sent, as init_from.step always was: "5" (text), true and 5.0 for an
# integer are refused rather than read as 5, 1 and 5 (pydantic's lax mode took them in some fields, not others).
# An integer is a number where a float is wanted (lr_g: 1).
Int = Annotated[int, Strict()]
Number = Annotated[float, Strict()]


def a_bool(value: Any) -> Any:
    """`value` when it is JSON true or false; else ValueError (pydantic: 422 naming the field, in every path that
    reports a spec's errors: a job, a study's settings and overrides, a generate request)."""
    if not isinstance(value, bool):
        shown = f"text {value!r:.40}" if isinstance(value, str) else f"{value!r:.40}"
        raise ValueError(f"must be true or false (a JSON boolean), not {shown}")
    return value


# A switch is JSON true or false: lax mode read "on", "no", 1 and 0 as booleans.
Bool = Annotated[bool, Strict(), BeforeValidator(a_bool)]
Float = Annotated[float, Strict(), AfterValidator(within_float32)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0), AfterValidator(within_float32)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0), AfterValidator(within_float32)]
UnitFloat = Annotated[float, Strict(), Field(ge=0, le=1)]
# torch's Adam needs 0 <= beta < 1 (a beta of 1 divides by zero in the bias correction).
Beta = Annotated[float, Strict(), Field(ge=0, lt=1)]
Betas = tuple[Beta, Beta]

# Ids of jobs and data sets (uuid4 today): anything outside this alphabet names nothing and never reaches SQL.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
ID_HELP = "1 to 64 ASCII letters, digits, '-' or '_'"


def is_id(value: str) -> bool:
    """Whether `value` is of the id alphabet of jobs and data sets (ID_PATTERN)."""
    return ID_PATTERN.fullmatch(value) is not None


# Joiners are format characters that emoji sequences (👩‍💻) and Persian and Indic spelling need: kept.
_JOINERS = frozenset("\u200c\u200d")
# Control (C0, DEL, C1), format (bidirectional overrides U+202E, zero-width space U+200B, BOM U+FEFF, ...),
# line and paragraph separators, lone surrogates.
_UNWANTED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def is_unwanted(character: str) -> bool:
    """Whether `character` may not be in stored text: an invisible, reordering, line-breaking or control one."""
    return unicodedata.category(character) in _UNWANTED_CATEGORIES and character not in _JOINERS


def unwanted_character(value: str) -> str | None:
    """The first character of `value` that `is_unwanted`, None when there is none.

    Such text cannot be stored (PostgreSQL refuses NUL, a surrogate is not UTF-8) or misleads who reads it (a
    name that displays reversed, two names that look the same, a line break in a one-line name).
    """
    return next((c for c in value if is_unwanted(c)), None)


def plain_text(value: str) -> str:
    """`value` when it holds no unwanted character (`is_unwanted`); else ValueError naming it (pydantic: 422)."""
    bad = unwanted_character(value)
    if bad is not None:
        raise ValueError(
            f"U+{ord(bad):04X} not allowed: no control, invisible format (bidirectional, zero-width) "
            "or line-separator characters"
        )
    return value


def an_id(value: str) -> str:
    """`value` when it is of the id alphabet; else ValueError (pydantic: 422 naming the field)."""
    if not is_id(value):
        raise ValueError(f"must be an id: {ID_HELP}")
    return value


Text = Annotated[str, AfterValidator(plain_text)]
Id = Annotated[str, AfterValidator(an_id)]
Optimizer = Literal["adam", "rmsprop"]

BuiltinName = Literal["ring8", "grid25", "spiral", "digits"]

# λ left unset is filled at admission from the data (models.catalog.default_gp_weight).
GP_WEIGHT_HELP = (
    "penalty weight λ; unset: 10 (paper), 0.1 on 2-D points (the WGAN-GP toy code), filled in at submission"
)

# Every integer a client sends is bounded well inside what the store holds (models.records.DB_INT_MAX):
# counts of steps by the largest run a spec may ask for, seeds by what torch and numpy seed with.
MAX_STEPS = 10_000_000
MAX_SEED = 2**31 - 1


# --------------------------------------------------------------------------- dataset


class DatasetRef(StrictModel):
    """Exactly one of `builtin` (a shipped data set) or `id` (an upload)."""

    builtin: BuiltinName | None = None
    id: Id | None = Field(default=None, description=f"an uploaded data set's id: {ID_HELP}")
    resize: Literal[8, 16, 32, 64] | None = Field(
        default=None, description="image data: resample to this square size (px)"
    )

    @field_validator("resize", mode="before")
    @classmethod
    def _resize_integer(cls, value: Any) -> Any:
        # A Literal takes 32.0 (and true is not 32 only by luck): an integer as sent, as every other number.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("must be one of the sizes 8, 16, 32 or 64, as an integer")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetRef:
        if (self.builtin is None) == (self.id is None):
            raise ValueError("give exactly one of 'builtin' or 'id'")
        return self


# --------------------------------------------------------------------------- architectures


class MLPArchitecture(StrictModel):
    """Fully connected G and D, for 2-D points and tabular rows."""

    name: Literal["mlp"]
    latent_dim: Int = Field(default=2, ge=1, le=1024)
    hidden: Int = Field(
        default=512,
        ge=4,
        le=8192,
        description="units per hidden layer (512 as in the WGAN-GP toy code; at 256 grid25 kept losing modes, see bench/ZOO_RESULTS.md)",
    )
    depth: Int = Field(default=3, ge=1, le=16)
    spectral_norm: Bool = Field(default=False, description="spectral norm on every layer of D (Miyato et al. 2018)")


class DCGANArchitecture(StrictModel):
    """Radford et al. 2015 convolutional G and D for 16/32/64 px images."""

    name: Literal["dcgan"]
    latent_dim: Int = Field(default=100, ge=1, le=1024)
    base_channels: Int = Field(default=64, ge=4, le=1024)


class ResNetArchitecture(StrictModel):
    """SNGAN-style residual G and D (Miyato et al. 2018) for images."""

    name: Literal["resnet"]
    latent_dim: Int = Field(default=128, ge=1, le=1024)
    base_channels: Int = Field(default=128, ge=4, le=1024)
    spectral_norm: Bool = True


Architecture = Annotated[
    MLPArchitecture | DCGANArchitecture | ResNetArchitecture,
    Field(discriminator="name"),
]


# --------------------------------------------------------------------------- losses


class _Optimisation(StrictModel):
    optimizer: Optimizer = "adam"
    lr_g: PositiveFloat = 2e-4
    lr_d: PositiveFloat = 2e-4
    betas: Betas = (0.5, 0.999)
    n_critic: Int = Field(default=1, ge=1, le=100, description="D steps per G step")
    r1_gamma: NonNegativeFloat = Field(
        default=0.0, description="R1 penalty weight on real data (Mescheder et al. 2018); 0 = off"
    )
    r1_every: Int = Field(default=16, ge=1, le=1000, description="lazy R1: apply every N D steps")

    @model_validator(mode="after")
    def _adam_step_fits(self) -> _Optimisation:
        problem = adam_step_problem(self.optimizer, {"lr_g": self.lr_g, "lr_d": self.lr_d}, self.betas)
        if problem:
            raise ValueError(problem)
        return self


def adam_step_problem(optimizer: str | None, rates: dict[str, float], betas: tuple[float, float]) -> str | None:
    """Why Adam cannot take its first step with these learning rates and betas (None when it can).

    torch's Adam steps by lr / (1 - beta1^t) as a float32 scalar: at t = 1 that is
    lr / (1 - beta1), which must stay within float32 (else "value cannot be converted
    to type float without overflow" at step 0).
    """
    if optimizer != "adam":
        return None
    for name, rate in rates.items():
        if rate / (1 - betas[0]) > FLOAT32_MAX:
            return (
                f"with adam, {name} / (1 - betas[0]) = {rate / (1 - betas[0]):.3g} overflows float32 "
                f"(at most {FLOAT32_MAX:.7g}): lower {name} or betas[0]"
            )
    return None


class MinimaxLoss(_Optimisation):
    """Goodfellow et al. 2014 (arXiv 1406.2661), the saturating generator loss."""

    name: Literal["minimax"]


class NSGANLoss(_Optimisation):
    """Goodfellow et al. 2014 §3, the non-saturating generator loss."""

    name: Literal["nsgan"]


class LSGANLoss(_Optimisation):
    """Mao et al. 2017 (arXiv 1611.04076), a-b-c coding."""

    name: Literal["lsgan"]
    a: Float = 0.0
    b: Float = 1.0
    c: Float = 1.0


class WGANLoss(_Optimisation):
    """Arjovsky et al. 2017 (arXiv 1701.07875), weight clipping."""

    name: Literal["wgan"]
    optimizer: Optimizer = "rmsprop"
    lr_g: PositiveFloat = 5e-5
    lr_d: PositiveFloat = 5e-5
    n_critic: Int = Field(default=5, ge=1, le=100)
    clip_value: PositiveFloat = 0.01
    critic_boost: Bool = Field(
        default=False,
        description="official code's schedule: 100 critic steps for the first 25 G steps and every 500th",
    )


class WGANGPLoss(_Optimisation):
    """Gulrajani et al. 2017 (arXiv 1704.00028)."""

    name: Literal["wgan-gp"]
    lr_g: PositiveFloat = 1e-4
    lr_d: PositiveFloat = 1e-4
    betas: Betas = (0.0, 0.9)
    n_critic: Int = Field(default=5, ge=1, le=100)
    gp_weight: NonNegativeFloat | None = Field(default=None, description=GP_WEIGHT_HELP)


class DRAGANLoss(_Optimisation):
    """Kodali et al. 2017 (arXiv 1705.07215), defaults of the official code."""

    name: Literal["dragan"]
    lr_g: PositiveFloat = 1e-4
    lr_d: PositiveFloat = 1e-4
    betas: Betas = (0.5, 0.9)
    gp_weight: NonNegativeFloat | None = Field(default=None, description=GP_WEIGHT_HELP)
    k: NonNegativeFloat = Field(default=1.0, description="target gradient norm")
    perturb_scale: PositiveFloat = Field(default=0.5, description="x_p = x + scale * std(x) * U[0,1)")


class HingeLoss(_Optimisation):
    """Lim & Ye 2017; defaults of SNGAN (Miyato et al. 2018)."""

    name: Literal["hinge"]
    betas: Betas = (0.0, 0.9)
    n_critic: Int = Field(default=5, ge=1, le=100)


class BEGANLoss(_Optimisation):
    """Berthelot et al. 2017 (arXiv 1703.10717); D is an auto-encoder."""

    name: Literal["began"]
    lr_g: PositiveFloat = 1e-4
    lr_d: PositiveFloat = 1e-4
    gamma: Number = Field(default=0.5, gt=0, le=1, description="diversity ratio")
    lambda_k: Number = Field(default=0.001, ge=0, le=1, description="k_t learning rate")
    k0: UnitFloat = 0.0


AdversarialName = Literal["minimax", "nsgan", "lsgan", "wgan", "wgan-gp", "dragan", "hinge"]

BASE_LOSS_CLASSES: dict[str, type[_Optimisation]] = {
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
    {f for cls in BASE_LOSS_CLASSES.values() for f in cls.model_fields} - set(_Optimisation.model_fields) - {"name"}
)


class _WrappedLoss(StrictModel):
    """A loss built on an adversarial base loss; unset fields take the base's defaults.

    The optimiser, learning rates, betas, n_critic and penalties come from the base loss's
    paper unless the spec sets them, except on the wrapper's own paper base (`paper_base`),
    where the wrapper's paper settings (`paper_defaults`) apply.
    """

    base: AdversarialName = "nsgan"
    optimizer: Optimizer | None = None
    lr_g: PositiveFloat | None = None
    lr_d: PositiveFloat | None = None
    betas: Betas | None = None
    n_critic: Int | None = Field(default=None, ge=1, le=100)
    r1_gamma: NonNegativeFloat | None = None
    r1_every: Int | None = Field(default=None, ge=1, le=1000)
    a: Float | None = None
    b: Float | None = None
    c: Float | None = None
    clip_value: PositiveFloat | None = None
    critic_boost: Bool | None = None
    gp_weight: NonNegativeFloat | None = None
    k: NonNegativeFloat | None = None
    perturb_scale: PositiveFloat | None = None

    # The loss's own paper ran it on one base with its own optimiser settings: those apply on that
    # base only; on any other base the base's paper settings do (InfoGAN on wgan keeps RMSProp 5e-5).
    paper_base: ClassVar[str | None] = None
    paper_defaults: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="after")
    def _fill_from_base(self) -> _WrappedLoss:
        base_cls = BASE_LOSS_CLASSES[self.base]
        # A stored spec (model_dump) carries the inapplicable fields as None: only a value is stray.
        stray = [
            f
            for f in _BASE_SPECIFIC
            if f in self.model_fields_set and getattr(self, f) is not None and f not in base_cls.model_fields
        ]
        if stray:
            raise ValueError(f"{', '.join(stray)} does not apply to base loss '{self.base}'")
        base_defaults = base_cls(name=self.base)  # type: ignore[call-arg]
        own = self.paper_defaults if self.base == self.paper_base else {}
        for field in base_cls.model_fields:
            if field == "name" or field in self.model_fields_set:
                continue
            default = own.get(field, getattr(base_defaults, field))
            object.__setattr__(self, field, default)
        assert self.betas is not None and self.lr_g is not None and self.lr_d is not None  # filled from the base
        problem = adam_step_problem(self.optimizer, {"lr_g": self.lr_g, "lr_d": self.lr_d}, self.betas)
        if problem:
            raise ValueError(problem)
        return self

    def base_loss(self) -> _Optimisation:
        """The adversarial loss this one wraps, with the resolved hyperparameters."""
        base_cls = BASE_LOSS_CLASSES[self.base]
        values = {f: getattr(self, f) for f in base_cls.model_fields if f != "name"}
        return base_cls(name=self.base, **values)  # type: ignore[call-arg]


class CGANLoss(_WrappedLoss):
    """Mirza & Osindero 2014 (arXiv 1411.1784); projection D of Miyato & Koyama 2018."""

    name: Literal["cgan"]
    conditioning: Literal["projection", "concat"] = "projection"


class InfoGANLoss(_WrappedLoss):
    """Chen et al. 2016 (arXiv 1606.03657); on its paper's base (nsgan) the official optimisers: Adam, G 1e-3, D 2e-4, beta1 0.5."""

    name: Literal["infogan"]
    info_lambda: NonNegativeFloat = Field(default=1.0, description="weight of the mutual-information term")
    categorical_codes: list[Annotated[Int, Field(ge=2, le=1000)]] = Field(
        default_factory=lambda: [10], max_length=8, description="number of categories of each categorical code"
    )
    continuous_codes: Int = Field(default=2, ge=0, le=64)
    continuous_std: PositiveFloat = Field(default=1.0, description="fixed std of the factored Gaussian Q")
    paper_base: ClassVar[str | None] = "nsgan"
    paper_defaults: ClassVar[dict[str, Any]] = {"optimizer": "adam", "lr_g": 1e-3, "lr_d": 2e-4, "betas": (0.5, 0.999)}

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

# --------------------------------------------------------------------------- training


class Watch(StrictModel):
    """Collapse and divergence detection on every job (worker/watch.py): report by default, stop when asked.

    Collapse (mode dropping, PacGAN's modes metric, Lin et al. 2018): at each snapshot a diversity figure is
    read: 2-D mixtures, the modes holding the samples (the perplexity of their nearest-mode histogram) over the
    data's modes; images, the Fréchet distance when the snapshot has one (`fd`), else the samples' mean pairwise
    distance over the real data's. A snapshot is down when that figure is below `collapse_floor` or below
    `collapse_drop` of the run's best (for `fd`: above the best / `collapse_drop`); `patience` snapshots in a row
    down is a collapse. Divergence, per loss: a non-finite value on every loss (the job always fails); on losses
    whose D scores real against fake up to a saturated end (minimax, nsgan, dragan, lsgan, hinge; cgan and
    infogan on them) also D winning completely while G's gradient norm stays under `vanishing_grad` of its own
    scale in the run (its largest while D was not winning) for `vanishing_steps` steps (Arjovsky & Bottou 2017:
    a perfect D leaves G no gradient). WGAN, WGAN-GP and BEGAN: non-finite values only (a critic's score has no
    end to win at, and weight clipping makes G's gradient tiny by design). Each kind fires once per job.
    """

    action: Literal["report", "stop"] = Field(
        default="report",
        description="report: an alert on the job and an `alert` event, training goes on; "
        "stop: the same, then the job ends as failed at that step (a checkpoint is kept)",
    )
    collapse: Bool = Field(default=True, description="watch for mode collapse at each sample snapshot")
    collapse_drop: Number = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="a snapshot is down when its diversity is below this fraction of the run's best so far",
    )
    collapse_floor: UnitFloat = Field(
        default=0.25,
        description="...or below this fraction of the data's own diversity (2-D mixtures: of its modes); 0 = off",
    )
    patience: Int = Field(default=3, ge=1, le=1000, description="snapshots in a row that must be down")
    warmup_steps: Int = Field(
        default=200,
        ge=0,
        le=MAX_STEPS,
        description="snapshots up to this step are not judged (G starts as a point: its first samples are alike)",
    )
    divergence: Bool = Field(
        default=True,
        description="a non-finite value is always a divergence alert and fails the job; this adds the test of D "
        "winning with G's gradient vanishing, on the losses where D can win (not wgan, wgan-gp, began)",
    )
    vanishing_steps: Int = Field(
        default=500,
        ge=1,
        le=MAX_STEPS,
        description="K: steps for which every metrics reading must show D winning and G's gradient vanishing",
    )
    vanishing_grad: Number = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="G's gradient norm (‖∇θ‖₂ over all its parameters) below this fraction of its scale in the "
        "run (its largest at a reading where D was not winning) is vanishing: relative, as a norm's size depends "
        "on the net, the data and the loss",
    )


class Training(StrictModel):
    steps: Int = Field(default=5000, ge=1, le=MAX_STEPS, description="generator steps")
    batch_size: Int = Field(default=256, ge=1, le=65_536)
    seed: Int = Field(default=0, ge=0, le=MAX_SEED)
    # On by default: measured to win on grid25 at 3,000 steps with the warm-up (bench/studies/grid25-ema.md).
    ema_decay: Number | None = Field(
        default=0.999,
        gt=0,
        lt=1,
        description="EMA of G's weights (warmed up: min(decay, (1+n)/(10+n)) at update n); samples and "
        "checkpoints use the EMA copy; null: none",
    )
    pack: Int = Field(default=1, ge=1, le=16, description="PacGAN: D sees this many samples at once")
    sample_count: Int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="samples per snapshot; unset: 64 images or 2,500 points (filled in at submission)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="bf16: the forwards under bfloat16 autocast, losses and gradient penalties in float32 "
        "(no loss scaler needed); fp32: float32 throughout (TF32 matrix products on a GPU); auto: bf16 on a GPU "
        "that supports it, else fp32",
    )
    max_attempts: Int = Field(default=3, ge=1, le=20)
    watch: Watch = Field(default_factory=Watch, description="collapse and divergence detection (see Watch)")

    @model_validator(mode="after")
    def _pack_divides_batch(self) -> Training:
        if self.batch_size % self.pack:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of pack {self.pack}")
        return self


# What one job may write, whatever its length (worker/trainer.py writes at every multiple of each `every.*` and at the
# last step: ceil(steps / every) of each). The catalog's and the bench's runs write 10 snapshots, 1 to 5 checkpoints and
# 500 readings of each series (bench/zoo.py, bench/studies); the bounds leave room for a long run's finer curve.
MAX_SAMPLE_SNAPSHOTS = 200
MAX_CHECKPOINTS = 200
MAX_METRIC_READINGS = 100_000
# Validation context that loads a spec stored before the bounds above (a job's, a checkpoint's), so what was admitted
# then still loads: JobSpec.model_validate(stored, context=STORED_SPEC). A request never carries it.
STORED_SPEC: dict[str, Any] = {"stored": True}


class Every(StrictModel):
    metrics: Int = Field(
        default=10,
        ge=1,
        le=MAX_STEPS,
        description=f"log metrics every N steps: at most {MAX_METRIC_READINGS:,} readings of a series per job "
        "(ceil(training.steps / N))",
    )
    samples: Int = Field(
        default=500,
        ge=1,
        le=MAX_STEPS,
        description=f"sample snapshot every N steps (and at the end): at most {MAX_SAMPLE_SNAPSHOTS} per job "
        "(ceil(training.steps / N))",
    )
    checkpoint: Int = Field(
        default=1000,
        ge=1,
        le=MAX_STEPS,
        description=f"checkpoint every N steps (and at the end): at most {MAX_CHECKPOINTS} per job "
        "(ceil(training.steps / N))",
    )
    # Retention (models/retention.py; the worker prunes after each checkpoint): null takes the service's setting.
    keep_last: Int | None = Field(
        default=None,
        ge=0,
        le=MAX_CHECKPOINTS,
        description="checkpoints kept: the newest N (the latest, the final one, is always kept); 0 keeps every "
        "checkpoint; null: the service's GANFORGE_CHECKPOINT_KEEP_LAST (default 3)",
    )
    keep_every: Int | None = Field(
        default=None,
        ge=0,
        le=MAX_STEPS,
        description="also keep each checkpoint whose step is a multiple of N (0: none kept for its step); "
        "null: the service's GANFORGE_CHECKPOINT_KEEP_EVERY (default 0)",
    )


# every.<field>: (what one write is called, the most one job may write)
_OUTPUT_BOUNDS = {
    "metrics": ("readings of each metric series", MAX_METRIC_READINGS),
    "samples": ("sample snapshots", MAX_SAMPLE_SNAPSHOTS),
    "checkpoint": ("checkpoints", MAX_CHECKPOINTS),
}


def fitted_every(steps: int, every: Every) -> Every:
    """`every` with each interval the user left out raised, where needed, to the least that keeps a job of `steps`
    steps within its output bound (ceil(steps / bound)); what the user gave is kept as given."""
    fitted = {
        field: max(getattr(every, field), math.ceil(steps / bound))
        for field, (_what, bound) in _OUTPUT_BOUNDS.items()
        if field not in every.model_fields_set
    }
    return every.model_copy(update=fitted) if fitted else every


def output_problems(steps: int, every: Every) -> list[tuple[str, str]]:
    """(every.<field>, why) for each `every` field that makes a job of `steps` steps write more than its bound:
    ceil(steps / every.<field>) writes, against MAX_METRIC_READINGS, MAX_SAMPLE_SNAPSHOTS and MAX_CHECKPOINTS.
    An interval the user left out is fitted first (fitted_every), so only one given explicitly can be a problem."""
    problems = []
    every = fitted_every(steps, every)
    for field, (what, bound) in _OUTPUT_BOUNDS.items():
        interval = getattr(every, field)
        count = math.ceil(steps / interval)
        if count > bound:
            least = math.ceil(steps / bound)
            problems.append(
                (
                    field,
                    f"{interval:,} gives {count:,} {what} for {steps:,} steps (training.steps); "
                    f"at most {bound:,} per job: use every.{field} ≥ {least:,} or fewer steps",
                )
            )
    return problems


def check_output_bounds(model: str, steps: int, every: Every) -> None:
    """Raise a ValidationError at every.<field> (pydantic: 422 naming it) for each of `output_problems`."""
    problems = output_problems(steps, every)
    if problems:
        errors: list[InitErrorDetails] = [
            {
                "type": PydanticCustomError("too_much_output", message),
                "loc": ("every", field),
                "input": getattr(every, field),
            }
            for field, message in problems
        ]
        raise ValidationError.from_exception_data(model, errors)


class InitFrom(StrictModel):
    """Warm start: begin from another job's checkpoint, whose networks must have this spec's shapes."""

    job: Id = Field(description=f"the source job's id: {ID_HELP}")
    step: int | Literal["latest"] = Field(default="latest", description="a checkpoint's step, or 'latest'")

    @field_validator("step", mode="before")
    @classmethod
    def _step(cls, value: Any) -> Any:
        # One check for the union, so an error names init_from.step rather than each member of the union.
        if value == "latest":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STEPS:
            raise ValueError(f"must be 'latest' or a step number from 0 to {MAX_STEPS}")
        return value


QUEUE_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
MAX_GPUS = 8


def reserved_queue(name: str) -> str | None:
    """Why `name` may not be a training queue, or None: the generate queues (models/queue.py generate_queue:
    GANFORGE_QUEUE + '.generate') and Celery's default queue carry other tasks, so a job routed there would wake
    the wrong workers and wait for ever."""
    if name == "celery" or name.endswith(".generate"):
        return f"{name!r} is reserved: names ending in '.generate' and 'celery' are the service's own queues"
    return None


class Resources(StrictModel):
    """Where and on how much a job runs: the named queue of workers that may take it, and its data-parallel width."""

    queue: Text | None = Field(
        default=None,
        pattern=QUEUE_NAME,
        description="the named queue (for example cpu, gpu, gpu-80gb) whose workers may take the job: workers "
        "started with `ganforge worker --queue NAME` serve it. Left out, the service's default queue "
        "(GANFORGE_QUEUE). A job for a queue no worker serves stays queued, and its queue_reason says so",
        examples=["gpu"],
    )
    gpus: Int = Field(
        default=1,
        ge=1,
        le=MAX_GPUS,
        description=f"data-parallel processes, 1 to {MAX_GPUS}: on a GPU worker one GPU each, trained with PyTorch's "
        "DistributedDataParallel (NCCL) on one worker; on a CPU worker as many gloo processes. Each process takes "
        "training.batch_size samples a step, so the combined batch is gpus x batch_size",
    )

    @field_validator("queue")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value is not None and (problem := reserved_queue(value)) is not None:
            raise ValueError(problem)
        return value


class Tracking(StrictModel):
    """Mirror the job to an MLflow tracking server (worker/mlflow_mirror.py): params, metrics, samples, the final
    checkpoint and the status. A server other than the service's (GANFORGE_MLFLOW_TRACKING_URI) must be one the
    service allows (GANFORGE_MLFLOW_ALLOWED_URIS), checked at submission (models/tracking.py)."""

    experiment: Text | None = Field(
        default=None,
        min_length=1,
        max_length=500,  # MLflow's longest experiment name
        description="the MLflow experiment (made when missing); left out, the service's (GANFORGE_MLFLOW_EXPERIMENT)",
        examples=["gan-sweeps"],
    )
    tracking_uri: Text | None = Field(
        default=None,
        max_length=2000,
        description="the tracking server; left out, the service's GANFORGE_MLFLOW_TRACKING_URI",
        examples=["http://mlflow.internal:5000"],
    )


class JobSpec(StrictModel):
    """A training job. Only dataset, architecture.name and loss.name are required."""

    name: Text = Field(default="", max_length=200)
    dataset: DatasetRef
    architecture: Architecture
    loss: Loss
    training: Training = Field(default_factory=Training)
    every: Every = Field(default_factory=Every)
    init_from: InitFrom | None = None
    resources: Resources = Field(default_factory=Resources)
    priority: Int = Field(
        default=PRIORITY_DEFAULT,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description=f"{PRIORITY_MIN}-{PRIORITY_MAX}, higher first: orders the owner's waiting jobs (between owners "
        "the one running fewer jobs goes first). At most the owner's quota max_priority (GANFORGE_QUOTA_MAX_PRIORITY, "
        f"default {PRIORITY_DEFAULT}); left out, {PRIORITY_DEFAULT} or that quota if lower",
    )
    tags: dict[Annotated[Text, Field(min_length=1, max_length=64)], Annotated[Text, Field(max_length=256)]] = Field(
        default_factory=dict,
        max_length=32,
        description='your labels for the job, e.g. {"team": "vision", "sweep": "lr-1"}: at most 32, '
        "keys 1 to 64 characters, values up to 256, no control characters. Stored as given and not used by "
        "training; list the jobs with one tag by GET /v1/jobs?tag=key:value",
        examples=[{"team": "vision", "sweep": "lr-1"}],
    )
    mlflow: Tracking | None = Field(
        default=None,
        description="mirror this job to an MLflow tracking server (see Tracking); left out, the job is mirrored "
        "when the service sets GANFORGE_MLFLOW_TRACKING_URI",
    )

    @model_validator(mode="after")
    def _output_is_bounded(self, info: ValidationInfo) -> JobSpec:
        if not (info.context or {}).get("stored"):
            check_output_bounds("JobSpec", self.training.steps, self.every)
            # A long job with the default intervals runs with wider ones (stored, so the spec says what runs).
            self.every = fitted_every(self.training.steps, self.every)
        return self
