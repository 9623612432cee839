"""A study: one request that trains the same data and architecture with several losses, seeds and settings.

    study = StudySpec.model_validate(body)                    # the request of POST /v1/studies
    cells = expand(study, study_id)                           # [Cell(loss, point, seed, spec)], or StudyRejected

`expand` fans the study out into ordinary job specs (models.spec.JobSpec), one per
loss × grid point × seed, and checks everything once for the whole study, so a
problem is reported at the study's own field path (`losses.1`,
`overrides.wgan.lr_d`, `grid.0.values.2`) and once, not once per job. A job is
tagged with its cell (STUDY_TAG and friends), so `GET /v1/jobs?tag=study:<id>`
lists a study's jobs and everything that works for a job works for them.

Pure pydantic, no SQL and no torch: the store keeps studies (models/store/studies.py),
the API serves them (api/routes/studies.py), models/comparison.py compares their runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, field_validator, model_validator

from models.admission import SpecProblem, check_compatible, resolve_dataset_info
from models.catalog import ARCHITECTURE_CLASSES, LOSS_CLASSES
from models.datasets import DatasetInfo
from models.quotas import PRIORITY_MAX, PRIORITY_MIN
from models.records import DB_INT_MAX, DB_INT_MIN, JobStatus
from models.spec import (
    MAX_SEED,
    Architecture,
    DatasetRef,
    Every,
    Int,
    JobSpec,
    StrictModel,
    Text,
    Training,
    check_output_bounds,
)

LossName = Literal["minimax", "nsgan", "lsgan", "wgan", "wgan-gp", "dragan", "hinge", "began", "cgan", "infogan"]
assert set(get_args(LossName)) == set(LOSS_CLASSES), "LossName must list the catalog's losses"

# What a grid axis may vary: `lr_multiplier` scales both learning rates of each loss's resolved settings
# (robustness to the learning rate); the others are the spec field at that dotted path.
GridParam = Literal[
    "lr_multiplier",
    "architecture.hidden",
    "architecture.depth",
    "architecture.base_channels",
    "architecture.latent_dim",
    "loss.n_critic",
    "training.batch_size",
    "training.steps",
]
_FLOAT_PARAMS = frozenset({"lr_multiplier"})
# A learning rate scaled past a million times either way is no setting anyone compares (the README's grid: 0.5, 1).
LR_MULTIPLIER_RANGE = (1e-6, 1e6)

# Bounds: what one request may make the service train.
MAX_STUDY_JOBS = 200
MAX_SEEDS = 10
MAX_GRID_AXES = 2
MAX_GRID_VALUES = 20
DEFAULT_SEEDS = 3

# The tags each job of a study carries (set by expand; a study's own tags may not use these keys).
STUDY_TAG, LOSS_TAG, POINT_TAG, SEED_TAG = "study", "study_loss", "study_point", "study_seed"
RESERVED_TAGS = (STUDY_TAG, LOSS_TAG, POINT_TAG, SEED_TAG)
MAX_STUDY_TAGS = 32 - len(RESERVED_TAGS)
JOB_NAME_MAX = 200

StudyStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


def _number(value: Any) -> Any:
    """A grid value: a finite JSON number (not a boolean, which Python counts as an int), an integer within what the
    store holds (±DB_INT_MAX: 10**400 would overflow the float of lr_multiplier and name no valid setting)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if isinstance(value, int) and not DB_INT_MIN <= value <= DB_INT_MAX:
        raise ValueError(f"{str(value)[:20]}… is out of range: a grid value is within ±{DB_INT_MAX}")
    return value


def _seeds(value: Any) -> Any:
    """Seeds: a count 1..MAX_SEEDS (seeds 0..n-1), or a list of 1..MAX_SEEDS distinct seeds 0..MAX_SEED."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_SEEDS:
            raise ValueError(f"a count of seeds must be 1 to {MAX_SEEDS} (got {value})")
        return value
    if isinstance(value, list):
        if not 1 <= len(value) <= MAX_SEEDS:
            raise ValueError(f"a list of seeds holds 1 to {MAX_SEEDS} seeds (got {len(value)})")
        for index, seed in enumerate(value):
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
                raise ValueError(f"seeds[{index}] must be an integer from 0 to {MAX_SEED} (got {seed!r})")
        if len(set(value)) != len(value):
            raise ValueError("the seeds must be distinct")
        return value
    raise ValueError(f"must be a number of seeds (1 to {MAX_SEEDS}) or a list of seeds")


def _no_reserved_tags(tags: dict[str, str]) -> dict[str, str]:
    taken = [key for key in tags if key in RESERVED_TAGS]
    if taken:
        raise ValueError(f"{', '.join(taken)}: set by the study on each job ({', '.join(RESERVED_TAGS)})")
    return tags


GridValue = Annotated[int | float, BeforeValidator(_number)]
StudyTags = Annotated[
    dict[Annotated[Text, Field(min_length=1, max_length=64)], Annotated[Text, Field(max_length=256)]],
    AfterValidator(_no_reserved_tags),
]


class GridAxis(StrictModel):
    """One hyperparameter the study varies, and its values (each job runs one value of each axis)."""

    param: GridParam = Field(
        description="`lr_multiplier` (multiplies lr_g and lr_d of each loss's resolved settings) or a spec field"
    )
    values: list[GridValue] = Field(min_length=1, max_length=MAX_GRID_VALUES, examples=[[0.1, 1, 10]])

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[int | float]) -> list[int | float]:
        if len(set(values)) != len(values):
            raise ValueError("the values must be distinct")
        return values


class StudySpec(StrictModel):
    """A study: the same data and architecture trained with several losses × grid points × seeds.

    Every field but `dataset` and `architecture` has a default. Bounded at MAX_STUDY_JOBS jobs.
    """

    name: Text = Field(default="", max_length=200)
    dataset: DatasetRef
    architecture: Architecture
    losses: list[LossName] | None = Field(
        default=None,
        min_length=1,
        max_length=len(LOSS_CLASSES),
        description="the losses to compare; null: every loss compatible with the data and architecture",
    )
    seeds: Annotated[int | list[int], BeforeValidator(_seeds)] = Field(
        default=DEFAULT_SEEDS,
        description=f"how many seeds (1 to {MAX_SEEDS}: seeds 0..n-1) or a list of distinct seeds",
    )
    training: Training = Field(
        default_factory=Training, description="common settings of every job; training.seed comes from `seeds`"
    )
    every: Every = Field(default_factory=Every)
    overrides: dict[LossName, dict[Annotated[Text, Field(min_length=1, max_length=64)], Any]] = Field(
        default_factory=dict,
        description='per-loss settings, e.g. {"wgan": {"lr_d": 1e-4}}: each validated as that loss\'s fields',
    )
    grid: list[GridAxis] = Field(
        default_factory=list,
        max_length=MAX_GRID_AXES,
        description="0 to 2 hyperparameters to vary; the jobs cover every combination of their values",
    )
    priority: Int | None = Field(
        default=None,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description="every job's priority (models/spec.py JobSpec.priority); null: the job default, lowered to the "
        "owner's quota max_priority",
    )
    tags: StudyTags = Field(
        default_factory=dict,
        max_length=MAX_STUDY_TAGS,
        description=f"copied to every job of the study, beside the study's own tags ({', '.join(RESERVED_TAGS)})",
    )

    @field_validator("losses")
    @classmethod
    def _distinct_losses(cls, losses: list[str] | None) -> list[str] | None:
        if losses is not None and len(set(losses)) != len(losses):
            raise ValueError("each loss at most once")
        return losses

    @model_validator(mode="after")
    def _output_is_bounded(self) -> StudySpec:
        # Each job writes what JobSpec bounds: said once at the study's every.<field> rather than once per loss.
        # With a grid over training.steps no job runs the base steps: each grid value is checked as its job's.
        if not any(axis.param == "training.steps" for axis in self.grid):
            check_output_bounds("StudySpec", self.training.steps, self.every)
        return self

    def seed_list(self) -> list[int]:
        """The seeds, one job per seed: 0..n-1 for a count, else the list as given."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


class Cell(NamedTuple):
    """One job of a study: its loss, grid point ({} without a grid), seed, and the job spec it runs."""

    loss: str
    point: dict[str, float | int]
    seed: int
    spec: JobSpec


class StudyRejected(Exception):
    """The study cannot run: `problems` holds every reason once, each at its field path in the study."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.message}" for p in problems))
        self.problems = problems


# --------------------------------------------------------------------------- points


def point_label(point: Mapping[str, float | int]) -> str:
    """ "param=value,param=value" in axis order ("" without a grid); floats as repr writes them (round-trips)."""
    return ",".join(f"{param}={value!r}" for param, value in point.items())


def parse_point(label: str) -> dict[str, float | int]:
    """The point a `point_label` wrote (ints stay ints); {} for ""."""
    point: dict[str, float | int] = {}
    for part in filter(None, label.split(",")):
        param, _, text = part.partition("=")
        try:
            point[param] = int(text)
        except ValueError:
            point[param] = float(text)
    return point


def job_name(study_name: str, loss: str, label: str, seed: int) -> str:
    """ "<study name>/<loss>[/<point>]/seed<n>", the study name cut so the whole fits JOB_NAME_MAX characters."""
    tail = f"/{loss}" + (f"/{label}" if label else "") + f"/seed{seed}"
    head = (study_name or "study")[: max(0, JOB_NAME_MAX - len(tail))]
    return (head + tail)[-JOB_NAME_MAX:]


# --------------------------------------------------------------------------- fan-out


def _probe(study: StudySpec, loss: str) -> JobSpec:
    """A job spec of the study with `loss` at its defaults (for the data checks, which depend on the name only)."""
    return JobSpec(
        dataset=study.dataset,
        architecture=study.architecture,
        loss={"name": loss},  # type: ignore[arg-type]
        training=study.training,
        every=study.every,
    )


def _loss_specific(study: StudySpec, loss: str, info: DatasetInfo, neutral: set[tuple[Any, str]]) -> list[str]:
    """Why `loss` cannot train on this data and architecture, beyond what no loss can (`neutral`)."""
    return [p.message for p in check_compatible(_probe(study, loss), info) if (p.loc, p.message) not in neutral]


def compatible_losses(study: StudySpec, info: DatasetInfo) -> list[str]:
    """The catalog's losses (catalog order) that can train on this data with the study's architecture and training
    (e.g. cgan only on labelled data, began only with an auto-encoder D): the default of `losses`."""
    neutral = {(p.loc, p.message) for p in check_compatible(_probe(study, "nsgan"), info)}
    return [name for name in LOSS_CLASSES if not _loss_specific(study, name, info, neutral)]


def error_message(error: Mapping[str, Any]) -> str:
    """pydantic's message of one error without the "Value error, " it puts before a validator's own words."""
    message = str(error["msg"])
    return message.removeprefix("Value error, ") if error.get("type") == "value_error" else message


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
    where = ".".join(p for p in where.split(".") if p not in LOSS_CLASSES and p not in ARCHITECTURE_CLASSES)
    return f"{where}: {error_message(error)}" if where else error_message(error)


def _check_overrides(study: StudySpec, losses: Sequence[str]) -> list[SpecProblem]:
    problems: list[SpecProblem] = []
    for loss, fields in study.overrides.items():
        if loss not in losses:
            message = f"'{loss}' is not one of this study's losses ({', '.join(losses)})"
            problems.append(SpecProblem(("overrides", loss), message))
            continue
        if "name" in fields:
            problems.append(SpecProblem(("overrides", loss, "name"), "the key names the loss: leave 'name' out"))
            continue
        try:
            LOSS_CLASSES[loss].model_validate({**fields, "name": loss})
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
                problems.append(SpecProblem(("overrides", loss, *loc), error_message(error)))
    return problems


def _check_grid(study: StudySpec, losses: Sequence[str]) -> list[SpecProblem]:
    problems: list[SpecProblem] = []
    seen: set[str] = set()
    for k, axis in enumerate(study.grid):
        if axis.param in seen:
            problems.append(SpecProblem(("grid", k, "param"), f"'{axis.param}' is already an axis of the grid"))
        seen.add(axis.param)
        section, _, field = axis.param.partition(".")
        if section == "architecture":
            arch = study.architecture.name
            if field not in ARCHITECTURE_CLASSES[arch].model_fields:
                fields = ", ".join(f for f in ARCHITECTURE_CLASSES[arch].model_fields if f != "name")
                message = f"'{arch}' has no field '{field}' (its fields: {fields})"
                problems.append(SpecProblem(("grid", k, "param"), message))
        elif section == "loss":
            lacking = [loss for loss in losses if field not in LOSS_CLASSES[loss].model_fields]
            if lacking:
                message = f"the losses {', '.join(lacking)} have no field '{field}'"
                problems.append(SpecProblem(("grid", k, "param"), message))
        for j, value in enumerate(axis.values):
            if axis.param in _FLOAT_PARAMS:
                low, high = LR_MULTIPLIER_RANGE
                if not low <= value <= high:
                    message = f"{axis.param} must be from {low:g} to {high:g} (got {value:.6g})"
                    problems.append(SpecProblem(("grid", k, "values", j), message))
            elif isinstance(value, float):
                # As strict as the field itself: a job with training.steps 10.0 is refused, so is the grid value.
                message = f"{axis.param} must be an integer, not {value!r} (send it without a fraction or exponent)"
                problems.append(SpecProblem(("grid", k, "values", j), message))
    return problems


def _points(study: StudySpec) -> list[tuple[dict[str, float | int], tuple[int, ...]]]:
    """Every grid point (axis order) with the index of its value on each axis; [({}, ())] without a grid."""
    axes = [
        [(float(v) if axis.param in _FLOAT_PARAMS else int(v), j) for j, v in enumerate(axis.values)]
        for axis in study.grid
    ]
    points = []
    for combination in itertools.product(*axes):
        point: dict[str, float | int] = {
            axis.param: value for axis, (value, _j) in zip(study.grid, combination, strict=True)
        }
        points.append((point, tuple(j for _v, j in combination)))
    return points


def _job_body(study: StudySpec, loss: str, point: Mapping[str, float | int]) -> dict[str, Any]:
    """The job spec (as JSON) of `loss` at `point`, seed 0 and without name or tags; may be invalid."""
    loss_fields: dict[str, Any] = {**study.overrides.get(loss, {}), "name": loss}  # type: ignore[call-overload]
    architecture = study.architecture.model_dump()
    training = study.training.model_dump()
    for param, value in point.items():
        section, _, field = param.partition(".")
        if section == "loss":
            loss_fields[field] = value
        elif section == "architecture":
            architecture[field] = value
        elif section == "training":
            training[field] = value
    if "lr_multiplier" in point:
        # The loss's resolved rates (its paper's, or the base loss's for cgan/infogan), then scaled.
        resolved = LOSS_CLASSES[loss].model_validate(loss_fields)
        loss_fields["lr_g"] = getattr(resolved, "lr_g") * point["lr_multiplier"]  # noqa: B009 - every loss has it
        loss_fields["lr_d"] = getattr(resolved, "lr_d") * point["lr_multiplier"]  # noqa: B009
    return {
        "dataset": study.dataset.model_dump(),
        "architecture": architecture,
        "loss": loss_fields,
        "training": training,
        # Intervals the study left out are fitted to each job's own training.steps (a grid may vary it).
        "every": study.every.model_dump(exclude_unset=True),
        # Left out when the study leaves it out, so admission lowers the default to the owner's max_priority.
        **({} if study.priority is None else {"priority": study.priority}),
    }


def _build(study: StudySpec, loss: str, point: Mapping[str, float | int]) -> JobSpec | str:
    """The job spec of `loss` at `point` (seed 0), or why it is invalid (the first error, with its path)."""
    try:
        return JobSpec.model_validate(_job_body(study, loss, point))
    except ValidationError as exc:
        return _first_error(exc)


def expand(study: StudySpec, study_id: str, *, info: DatasetInfo | None = None) -> list[Cell]:
    """The study's jobs: one Cell per loss × grid point × seed, in that nesting order.

    `info` describes the data set; it may be left out for a built-in one (an upload's comes
    from the store: models.admission.dataset_info). Each spec is as submitted (admission fills
    data-dependent defaults: models.admission.fill_defaults); its name is
    "<study name>/<loss>[/<point>]/seed<n>", its tags the study's plus study=<study_id>,
    study_loss, study_point ("param=value,..." or "") and study_seed.

    Raises StudyRejected with every problem once, at the study's field path: an unknown or
    incompatible loss (losses.<i>, with why), an override that is not a field of its loss
    (overrides.<loss>.<field>), a grid parameter the architecture or a loss lacks
    (grid.<k>.param), a grid value that makes an invalid job (grid.<k>.values.<j>), more
    than MAX_STUDY_JOBS jobs (grid, seeds or losses), training.seed set (seeds set it).
    Raises ValueError when `info` is needed and not given.
    """
    info = info or resolve_dataset_info(study.dataset)
    if info is None:
        raise ValueError("the study names an uploaded data set: pass its info")
    problems: list[SpecProblem] = []
    if "seed" in study.training.model_fields_set:
        problems.append(SpecProblem(("training", "seed"), "set `seeds` instead: each job's seed is one of them"))
    neutral_problems = check_compatible(_probe(study, "nsgan"), info)
    problems += neutral_problems
    neutral = {(p.loc, p.message) for p in neutral_problems}
    if study.losses is None:
        losses = compatible_losses(study, info)
        if not losses and not neutral_problems:
            problems.append(SpecProblem(("losses",), "no loss of the catalog can train on this data set"))
    else:
        losses = list(study.losses)
        for i, loss in enumerate(losses):
            why = _loss_specific(study, loss, info, neutral)
            if why:
                problems.append(SpecProblem(("losses", i), f"{loss} cannot train here: {'; '.join(why)}"))
    problems += _check_overrides(study, losses) + _check_grid(study, losses)
    seeds = study.seed_list()
    point_count = math.prod(len(axis.values) for axis in study.grid)
    count = len(losses) * point_count * len(seeds)
    if count > MAX_STUDY_JOBS:
        too_many = "grid" if study.grid else ("seeds" if len(seeds) > 1 else "losses")
        message = (
            f"{len(losses)} losses × {point_count} grid points × {len(seeds)} seeds = {count} jobs; "
            f"a study runs at most {MAX_STUDY_JOBS}"
        )
        problems.append(SpecProblem((too_many,), message))
    if problems:
        raise StudyRejected(_once(problems))

    points = _points(study)
    bases: dict[str, JobSpec] = {}
    specs: dict[tuple[str, str], JobSpec] = {}
    for i, loss in enumerate(losses):
        base = _build(study, loss, {})
        if isinstance(base, str):
            where: tuple[str | int, ...] = ("overrides", loss) if loss in study.overrides else ("losses", i)
            problems.append(SpecProblem(where, f"{loss}: {base}"))
            continue
        bases[loss] = base
        for point, indices in points:
            built = _build(study, loss, point)
            if isinstance(built, str):
                problems.append(_blame(study, loss, point, indices, built))
            else:
                specs[(loss, point_label(point))] = built
    if problems:
        raise StudyRejected(_once(problems))

    cells = []
    for loss in losses:
        for point, _indices in points:
            label = point_label(point)
            spec = specs[(loss, label)]
            for seed in seeds:
                tags = {
                    **study.tags,
                    STUDY_TAG: study_id,
                    LOSS_TAG: loss,
                    POINT_TAG: label,
                    SEED_TAG: str(seed),
                }
                job = spec.model_copy(
                    update={
                        "name": job_name(study.name, loss, label, seed),
                        "tags": tags,
                        "training": spec.training.model_copy(update={"seed": seed}),
                    }
                )
                cells.append(Cell(loss, dict(point), seed, job))
    return cells


def _blame(
    study: StudySpec, loss: str, point: Mapping[str, float | int], indices: tuple[int, ...], why: str
) -> SpecProblem:
    """The grid value that makes `loss` at `point` invalid: the axis whose value alone does, else the whole grid."""
    for k, ((param, value), j) in enumerate(zip(point.items(), indices, strict=True)):
        if isinstance(_build(study, loss, {param: value}), str):
            return SpecProblem(("grid", k, "values", j), f"{param}={value!r} makes an invalid {loss} job: {why}")
    return SpecProblem(("grid",), f"the point {point_label(point)} makes an invalid {loss} job: {why}")


def _once(problems: Iterable[SpecProblem]) -> list[SpecProblem]:
    """The first problem at each field path (a grid value that fails for every loss is said once)."""
    seen: dict[tuple[str | int, ...], SpecProblem] = {}
    for problem in problems:
        seen.setdefault(problem.loc, problem)
    return list(seen.values())


# The fields expand's checks read for the job count and for which losses an override may name.
_COUNT_FIELDS = frozenset({"losses", "seeds", "grid"})


def problems_beside(failed: Iterable[str], problems: Iterable[SpecProblem]) -> list[SpecProblem]:
    """Of the problems expand found in a study whose invalid top-level fields (`failed`) were left at their
    defaults, those that stand on their own: none at a failed field, no job count when the count's fields
    failed, no "not one of this study's losses" when `losses` failed (both computed from the defaults)."""
    failed = set(failed)
    kept = []
    for problem in problems:
        head = problem.loc[0] if problem.loc else ""
        if head in failed:
            continue
        if failed & _COUNT_FIELDS and f"a study runs at most {MAX_STUDY_JOBS}" in problem.message:
            continue
        if "losses" in failed and head == "overrides" and len(problem.loc) == 2:
            continue
        kept.append(problem)
    return kept


def resolved_losses(study: StudySpec, cells: Sequence[Cell]) -> list[str]:
    """The study's losses as they run (the default filled in), in order."""
    return list(dict.fromkeys(cell.loss for cell in cells)) or list(study.losses or [])


# --------------------------------------------------------------------------- status


def study_status(*, cancelled: bool, counts: Mapping[str, int]) -> StudyStatus:
    """The study's status from its jobs' status counts.

    Once the study is cancelled: cancelling while a job is still active (a running job stops at its
    next step); when every job is final, cancelled only if the cancel stopped one (some job ended
    cancelled): a cancel that came as the last jobs finished anyway reads as they ended. Else running
    while a job is active and some job has started or finished (queued while all are queued); when all
    are final: succeeded when all succeeded, failed when one failed, cancelled when jobs were cancelled
    one by one.
    """
    active = sum(counts.get(s, 0) for s in JobStatus.ACTIVE)
    total = sum(counts.values())
    if cancelled:
        if active:
            return "cancelling"
        if counts.get(JobStatus.CANCELLED, 0) or not total:
            return "cancelled"
    if not total:  # no job counted (yet)
        return "queued"
    if active:
        return "queued" if counts.get(JobStatus.QUEUED, 0) == total else "running"
    if counts.get(JobStatus.FAILED, 0):
        return "failed"
    if counts.get(JobStatus.CANCELLED, 0):
        return "cancelled"
    return "succeeded"
