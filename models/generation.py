"""What `POST /v1/jobs/{id}/generate` accepts: the request body and its checks against the job (no torch here).

A request is checked twice: `GenerateRequest` (pydantic) checks what it can alone (types, count 1..MAX_COUNT, seed,
step, format), then `check_against_job` checks it against the job's spec and data set: the count's bound for the
kind of data (MAX_IMAGES images, MAX_POINTS points or rows, and at most MAX_VALUES numbers in all), `labels` for
`cgan` only and within its classes, `codes` for `infogan` only and the shape of its codes (Chen et al. 2016,
arXiv 1606.03657: categorical codes of K_i categories and continuous codes in [-1, 1] during training), `ema`
only when the job kept an EMA of G. Each problem names the body field at fault (body.labels.3, ...).
Every number is bounded before it leaves the API: a continuous code is finite and within ±MAX_CONTINUOUS_CODE
(checked in the model, so NaN, ±inf and 1e308 are one 422 at codes.continuous.<i>[.<j>], never a worker's
failure), a class index within 0..MAX_INDEX even when the data set's record is gone.
The worker (worker/generate.py) runs the request through ganforge.generator.Generator.generate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from models.datasets import DatasetInfo
from models.spec import Bool, InfoGANLoss, Int, JobSpec, Number, StrictModel

MAX_POINTS = 10_000  # 2-D points or rows per request: a scatter plot of more says nothing new
MAX_IMAGES = 256  # images per request: a 16×16 grid
MAX_COUNT = MAX_POINTS
MAX_VALUES = 2**22  # numbers in one result: 16 MiB of float32, whatever the sample shape
MAX_SEED = 2**31 - 1
MAX_STEP = 10**12
# Training drew continuous codes from U(-1, 1); the InfoGAN paper (Fig. 2) shows extrapolation to ±2. Past ±10 a
# code says nothing about what G learnt, and 1e308 overflows float32 on the worker.
MAX_CONTINUOUS_CODE = 10.0
MAX_INDEX = 2**31 - 1  # a class or category index: the most any data set can have (settings.max_classes is less)
FORMATS = ("png", "npy")
MEDIA_TYPES = {"png": "image/png", "npy": "application/x-npy"}

Indices = Annotated[list[Int], Field(max_length=MAX_COUNT)]
IndexRows = Annotated[list[Annotated[list[Int], Field(max_length=8)]], Field(max_length=MAX_COUNT)]
Values = Annotated[list[Number], Field(max_length=64)]
ValueRows = Annotated[list[Annotated[list[Number], Field(max_length=64)]], Field(max_length=MAX_COUNT)]


class Codes(StrictModel):
    """InfoGAN's codes; a code not given is drawn from its prior (uniform categories, uniform [-1, 1])."""

    categorical: Int | Indices | IndexRows | None = Field(
        default=None,
        description="the first categorical code's category for every sample (an int) or for each (count ints), "
        "or every categorical code of each sample (count lists of one index per code)",
    )
    continuous: Values | ValueRows | None = Field(
        default=None,
        description="the continuous codes of every sample (one value per code) or of each (count lists); "
        f"training drew them from [-1, 1]; each finite and within ±{MAX_CONTINUOUS_CODE:g}",
    )

    @field_validator("categorical", "continuous", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        # JSON true is not a category (pydantic would read it as 1).
        if isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value)):
            raise ValueError("must be numbers, not booleans")
        return value

    @field_validator("categorical", mode="before")
    @classmethod
    def _indices(cls, value: Any) -> Any:
        # Each index within 0..MAX_INDEX here, once, at codes.categorical[.<i>[.<j>]] (the job's categories are
        # checked against it later): a union member's own error would say it once per member.
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, list):
                    for j, index in enumerate(item):
                        _check_index(index, (i, j))
                else:
                    _check_index(item, (i,))
        else:
            _check_index(value, ())
        return value

    @field_validator("continuous", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        # Here rather than as constraints of the union's float: those would report each bad value once per member
        # of the union (codes.continuous.list[float].0 and ...list[list[float]].0).
        if not isinstance(value, list):
            return value
        for i, item in enumerate(value):
            if isinstance(item, list):
                for j, number in enumerate(item):
                    _check_code(number, (i, j))
            else:
                _check_code(item, (i,))
        return value


def _check_code(value: Any, loc: tuple[int, ...]) -> None:
    """A ValidationError at `loc` (under codes.continuous) for a number that is not finite or past the bound; other
    values are left to the field's type."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    try:
        number = float(value)
    except OverflowError:  # an int past float's range (JSON 1 followed by 400 zeros)
        number = math.inf
    if math.isfinite(number) and abs(number) <= MAX_CONTINUOUS_CODE:
        return
    message = (
        f"{value!r:.40} is out of bounds: a continuous code must be finite and within "
        f"±{MAX_CONTINUOUS_CODE:g} (training drew them from [-1, 1])"
    )
    raise ValidationError.from_exception_data(
        "Codes", [{"type": PydanticCustomError("code_out_of_bounds", message), "loc": loc, "input": value}]
    )


def _check_index(value: Any, loc: tuple[int, ...]) -> None:
    """A ValidationError at `loc` for an integer outside 0..MAX_INDEX (the class range itself is checked against the
    job); other values are left to the field's type."""
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_INDEX:
        message = f"{str(value)[:40]} is not a class index: indices are 0 to {MAX_INDEX} (and within the job's classes)"
        raise ValidationError.from_exception_data(
            "GenerateRequest",
            [{"type": PydanticCustomError("index_out_of_bounds", message), "loc": loc, "input": value}],
        )


class GenerateRequest(StrictModel):
    """The body of POST /v1/jobs/{id}/generate."""

    count: Int = Field(
        ge=1,
        le=MAX_COUNT,
        description=f"how many samples: 1 to {MAX_IMAGES} images or {MAX_POINTS} points/rows, "
        f"and at most {MAX_VALUES} numbers in all",
    )
    seed: Int = Field(default=0, ge=0, le=MAX_SEED, description="the same seed gives the same samples")
    step: Int | Literal["latest"] = Field(default="latest", description="a checkpoint's step, or 'latest'")
    labels: Int | Indices | None = Field(
        default=None,
        description="cgan only: one class index for every sample, or one per sample (count of them); "
        "default: drawn uniformly",
    )
    codes: Codes | None = Field(default=None, description="infogan only: the codes (default: drawn from the priors)")
    format: Literal["png", "npy"] = Field(
        default="npy",
        description="npy: the float32 array (count×D points or rows, in the data's coordinates and not clamped: "
        "an mlp G has no tanh; or count×C×H×W images, in [-1, 1] from a dcgan or resnet G); png: a picture",
    )
    ema: Bool | None = Field(
        default=None, description="use the EMA copy of G (training.ema_decay); default: when the job kept one"
    )

    @field_validator("step", mode="before")
    @classmethod
    def _step(cls, value: Any) -> Any:
        # One message for the union, naming body.step rather than each member.
        if value == "latest":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STEP:
            raise ValueError(f"must be 'latest' or a step number from 0 to {MAX_STEP}")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value)):
            raise ValueError("must be class indices (integers), not booleans")
        if isinstance(value, list):
            for i, label in enumerate(value):
                _check_index(label, (i,))
        else:
            _check_index(value, ())
        return value


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: the body field (e.g. "labels.3") and why."""

    field: str
    message: str


def count_bound(info: DatasetInfo, shape: tuple[int, ...]) -> int:
    """The most samples one request may ask of a job whose samples have `shape`: MAX_IMAGES images or MAX_POINTS
    points/rows, fewer when that many would pass MAX_VALUES numbers."""
    kind_bound = MAX_IMAGES if info.kind == "images" else MAX_POINTS
    return max(1, min(kind_bound, MAX_VALUES // max(1, math.prod(shape))))


def has_ema(spec: JobSpec) -> bool:
    """Whether the job keeps an EMA copy of G (its checkpoints hold generator_ema.* weights)."""
    return spec.training.ema_decay is not None


def check_against_job(
    request: GenerateRequest, spec: JobSpec, info: DatasetInfo | None, shape: tuple[int, ...] | None
) -> list[Problem]:
    """What is wrong with `request` for the job of `spec` (empty: nothing).

    `info` and `shape` (one sample's shape after resize) are None when the data set's record is gone: the count
    is then held to MAX_IMAGES and the class range is left to the worker.
    """
    problems: list[Problem] = []
    bound = count_bound(info, shape) if info is not None and shape is not None else MAX_IMAGES
    if request.count > bound:
        what = "samples" if info is None else ("images" if info.kind == "images" else "points")
        problems.append(
            Problem("count", f"{request.count} is too many: at most {bound} {what} per request for this job")
        )
    loss = spec.loss.name
    if request.labels is not None:
        problems += _check_labels(request, loss, info)
    if request.codes is not None:
        problems += _check_codes(request.codes, request.count, spec)
    if request.ema and not has_ema(spec):
        problems.append(Problem("ema", "this job kept no EMA of G (training.ema_decay was not set): omit ema"))
    return problems


def _check_labels(request: GenerateRequest, loss: str, info: DatasetInfo | None) -> list[Problem]:
    labels = request.labels
    if loss != "cgan":
        return [Problem("labels", f"labels apply to a cgan job; this job's loss is {loss}")]
    if isinstance(labels, list) and len(labels) != request.count:
        return [Problem("labels", f"give one class index, or {request.count} (one per sample); got {len(labels)}")]
    k = info.num_classes if info is not None else 0
    if not k:
        return []
    values = labels if isinstance(labels, list) else [labels]
    for i, label in enumerate(values):
        if not 0 <= int(label) < k:  # type: ignore[arg-type]
            field = f"labels.{i}" if isinstance(labels, list) else "labels"
            return [Problem(field, f"{label} is not a class of this job: classes are 0..{k - 1}")]
    return []


def _check_codes(codes: Codes, count: int, spec: JobSpec) -> list[Problem]:
    if not isinstance(spec.loss, InfoGANLoss):
        return [Problem("codes", f"codes apply to an infogan job; this job's loss is {spec.loss.name}")]
    ks, c = spec.loss.categorical_codes, spec.loss.continuous_codes
    problems: list[Problem] = []
    categorical = codes.categorical
    if categorical is not None:
        if not ks:
            problems.append(Problem("codes.categorical", "this job has no categorical code"))
        elif isinstance(categorical, int):
            problems += _in_range("codes.categorical", [categorical], ks[0], single=True)
        elif all(isinstance(row, int) for row in categorical):
            if len(categorical) != count:
                problems.append(Problem("codes.categorical", f"give one index or {count}; got {len(categorical)}"))
            else:
                problems += _in_range("codes.categorical", categorical, ks[0])  # type: ignore[arg-type]
        else:
            rows: list[list[int]] = categorical  # type: ignore[assignment]
            if len(rows) != count or any(len(row) != len(ks) for row in rows):
                problems.append(Problem("codes.categorical", f"give {count} lists of {len(ks)} indices (one per code)"))
            else:
                for i, row in enumerate(rows):
                    for j, (value, k) in enumerate(zip(row, ks, strict=True)):
                        if not 0 <= value < k:
                            problems.append(
                                Problem(f"codes.categorical.{i}.{j}", f"{value} is out of range: 0..{k - 1}")
                            )
                            return problems
    continuous = codes.continuous
    if continuous is not None:
        if not c:
            problems.append(Problem("codes.continuous", "this job has no continuous code"))
        elif all(isinstance(v, float | int) for v in continuous):
            if len(continuous) != c:
                problems.append(Problem("codes.continuous", f"give {c} values (one per code); got {len(continuous)}"))
        else:
            lists: list[list[float]] = continuous  # type: ignore[assignment]
            if len(lists) != count or any(len(row) != c for row in lists):
                problems.append(Problem("codes.continuous", f"give {c} values, or {count} lists of {c}"))
    return problems


def _in_range(field: str, values: list[int], k: int, *, single: bool = False) -> list[Problem]:
    for i, value in enumerate(values):
        if not 0 <= value < k:
            return [Problem(field if single else f"{field}.{i}", f"{value} is out of range: indices are 0..{k - 1}")]
    return []


def worker_params(request: GenerateRequest, step: int, ema: bool) -> dict[str, Any]:
    """The stored request (generations.params): the step resolved (so 'latest' means the newest at request time)
    and whether the EMA weights are used."""
    params = request.model_dump(mode="json", exclude_none=True)
    params.update(step=step, ema=ema)
    return params
