"""Admission: may this spec run for this owner, and with what values.

    spec = admit(spec=spec, owner=owner, store=store)  # the spec as it will run, or SpecRejected

Resolves the data set (a built-in one, or the owner's upload through the store),
checks the spec against it, checks a warm start against the source job's
networks, fills in every default the worker would otherwise derive from the
data, so the stored spec says what actually runs, and refuses a spec whose
memory estimate (models/memory.py) exceeds a worker's (GANFORGE_WORKER_MEMORY_BYTES). Domain exceptions only: the
API maps them to HTTP (SpecRejected → 422 with every problem's field path,
DatasetNotFound → 404).
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import ValidationError

from models.catalog import (
    AUTOENCODER_ARCHITECTURES,
    DISCRIMINATOR_NORM,
    GRADIENT_PENALTY_LOSSES,
    IMAGE_ARCHITECTURES,
    default_gp_weight,
    default_sample_count,
)
from models.datasets import BUILTIN_DATASETS, DatasetInfo
from models.memory import SAFETY_FACTOR, MemoryEstimate, estimate_memory, gib, processes_sharing_memory
from models.records import Checkpoint, Dataset, Job
from models.settings import get_settings
from models.spec import STORED_SPEC, DatasetRef, JobSpec, Training
from models.tracking import tracking_problems

Loc = tuple[str | int, ...]


class SpecProblem(Exception):
    """One reason a well-formed spec cannot run, at the field path `loc` (e.g. ("loss", "r1_gamma"))."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message

    def __repr__(self) -> str:
        return f"SpecProblem({'.'.join(map(str, self.loc))}: {self.message})"


class SpecRejected(Exception):
    """The spec cannot run: `problems` holds every reason, each with its field path."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.message}" for p in problems))
        self.problems = problems


class DatasetNotFound(Exception):
    """The spec names an uploaded data set that does not exist or belongs to another owner."""

    def __init__(self, dataset_id: str) -> None:
        super().__init__(f"no data set {dataset_id!r}")
        self.dataset_id = dataset_id


class AdmissionStore(Protocol):
    """What admission reads from the job store (models.store.JobStore provides it)."""

    def get_dataset(self, *, dataset_id: str, owner: str | None = None) -> Dataset | None: ...

    def get_job(self, *, job_id: str, owner: str | None = None) -> Job | None: ...

    def get_checkpoint(self, *, job_id: str, step: int | None) -> Checkpoint | None: ...


# --------------------------------------------------------------------------- data set


def resolve_dataset_info(ref: DatasetRef) -> DatasetInfo | None:
    """The description of a built-in data set (None for an upload: ask the store)."""
    return BUILTIN_DATASETS[ref.builtin] if ref.builtin else None


def dataset_info(ref: DatasetRef, *, owner: str, store: AdmissionStore) -> DatasetInfo:
    """The stored description of the data set `ref` names (before any resize).

    Raises DatasetNotFound for an upload that is missing or another owner's (indistinguishable on purpose).
    """
    info = resolve_dataset_info(ref)
    if info is not None:
        return info
    record = store.get_dataset(dataset_id=ref.id or "", owner=owner)
    if record is None:
        raise DatasetNotFound(ref.id or "")
    return DatasetInfo.model_validate(record.info)


def network_shape(spec: JobSpec, info: DatasetInfo) -> tuple[int, ...]:
    """One example's shape as the networks see it: (D,) for points, (C, H, W) after `dataset.resize` for images."""
    if info.kind == "images" and spec.dataset.resize is not None:
        return (info.shape[0], spec.dataset.resize, spec.dataset.resize)
    return tuple(info.shape)


# --------------------------------------------------------------------------- compatibility


def check_compatible(spec: JobSpec, info: DatasetInfo) -> list[SpecProblem]:
    """Every reason this spec cannot train on this data set (empty when it can).

    `info` may describe the data before or after `dataset.resize` (the worker passes it resized).
    """
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


# --------------------------------------------------------------------------- warm start


def penalised(spec: JobSpec) -> bool:
    """Whether D trains under a per-sample gradient penalty (WGAN-GP, DRAGAN, or R1 with γ > 0)."""
    loss = spec.loss
    base = getattr(loss, "base", loss.name)
    return base in GRADIENT_PENALTY_LOSSES or bool(getattr(loss, "r1_gamma", 0) or 0)


def network_signature(spec: JobSpec, info: DatasetInfo) -> dict[str, Any]:
    """Everything that decides the networks' parameter names and shapes, and nothing else.

    Two specs with equal signatures build G and D (and G's EMA copy) whose state dicts
    load into each other strictly; the optimiser settings, penalty weights, steps and
    seeds are not in it. `info` may be before or after `dataset.resize`. Mirrors
    worker/gan/factory.py; tests/test_admission.py builds the networks to hold them in step.
    """
    loss = spec.loss
    autoencoder = loss.name == "began"
    cgan = loss.name == "cgan"
    return {
        "architecture": spec.architecture.model_dump(mode="json"),
        "data_shape": list(network_shape(spec, info)),
        "num_classes": info.num_classes if cgan else 0,
        "conditioning": getattr(loss, "conditioning", None) if cgan else None,
        "categorical_codes": list(getattr(loss, "categorical_codes", [])),
        "continuous_codes": getattr(loss, "continuous_codes", 0),
        "discriminator": "autoencoder" if autoencoder else "critic",
        # BEGAN's auto-encoder has no normalisation layers and scores single samples.
        "discriminator_norm": None if autoencoder else DISCRIMINATOR_NORM[spec.architecture.name][penalised(spec)],
        "pack": None if autoencoder else spec.training.pack,
    }


# For each part of the signature: what it is, and the spec fields that decide it, the loss and the
# architecture before the fields they enable (a refusal names the first one that differs between the specs).
_SIGNATURE_PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "data_shape": ("the data's shape", ("dataset.resize", "dataset.builtin", "dataset.id")),
    "num_classes": ("cgan's number of classes", ("loss.name", "dataset.builtin", "dataset.id")),
    "conditioning": ("cgan's conditioning", ("loss.name", "loss.conditioning")),
    "categorical_codes": ("InfoGAN's categorical codes", ("loss.name", "loss.categorical_codes")),
    "continuous_codes": ("InfoGAN's continuous codes", ("loss.name", "loss.continuous_codes")),
    "discriminator": ("the kind of discriminator", ("loss.name",)),
    "discriminator_norm": (
        "D's normalisation layers (a gradient penalty or R1 rules out batch norm)",
        ("architecture.name", "loss.r1_gamma", "loss.name", "loss.base"),
    ),
    "pack": ("D's packed input (PacGAN)", ("loss.name", "training.pack")),
}


def _value(spec: JobSpec, path: str) -> Any:
    value: Any = spec
    for part in path.split("."):
        value = getattr(value, part, None)
    return value


def _blame(spec: JobSpec, source: JobSpec, paths: tuple[str, ...]) -> str:
    differing = [p for p in paths if _value(spec, p) != _value(source, p)]
    return (differing or list(paths))[0]


def check_warm_start(
    spec: JobSpec, info: DatasetInfo, source: JobSpec, source_info: DatasetInfo, source_id: str = "the source job"
) -> list[SpecProblem]:
    """Every reason the weights of `source` (trained on `source_info`) cannot initialise `spec`'s networks.

    Compares the two `network_signature`s; one problem per field of `spec` that makes them differ,
    saying which parts of the networks differ (empty when the weights load).
    """
    mine, theirs = network_signature(spec, info), network_signature(source, source_info)
    reasons: dict[str, list[str]] = {}
    arch_here, arch_there = mine["architecture"], theirs["architecture"]
    for field in [*arch_here, *(k for k in arch_there if k not in arch_here)]:
        here, there = arch_here.get(field), arch_there.get(field)
        if here != there:
            reasons.setdefault(f"architecture.{field}", []).append(
                f"its architecture differs from this spec's in {field}: {there!r} there, {here!r} here"
            )
    for part, (what, paths) in _SIGNATURE_PARTS.items():
        if mine[part] != theirs[part]:
            reasons.setdefault(_blame(spec, source, paths), []).append(
                f"{what}: {theirs[part]!r} there, {mine[part]!r} here"
            )
    return [
        SpecProblem(
            tuple(path.split(".")),
            f"init_from: the networks of job {source_id} differ from this spec's ({'; '.join(why)}): "
            "its weights cannot load",
        )
        for path, why in reasons.items()
    ]


def _warm_start_problems(spec: JobSpec, info: DatasetInfo, *, owner: str, store: AdmissionStore) -> list[SpecProblem]:
    if spec.init_from is None:
        return []
    source = store.get_job(job_id=spec.init_from.job, owner=owner)
    if source is None:
        return [SpecProblem(("init_from", "job"), f"no job {spec.init_from.job!r}")]
    step = None if spec.init_from.step == "latest" else spec.init_from.step
    if store.get_checkpoint(job_id=source.id, step=step) is None:
        return [SpecProblem(("init_from", "step"), f"job {source.id} has no checkpoint at step {spec.init_from.step}")]
    try:
        source_spec = JobSpec.model_validate(source.spec, context=STORED_SPEC)  # as admitted
    except ValidationError as exc:  # stored under an older, looser schema (e.g. betas of 1, a tab in its name)
        where = ".".join(map(str, exc.errors()[0]["loc"]))
        return [SpecProblem(("init_from", "job"), f"job {source.id}'s spec is no longer valid ({where}): start afresh")]
    try:
        source_info = dataset_info(source_spec.dataset, owner=owner, store=store)
    except DatasetNotFound:
        message = f"job {source.id}'s data set {source_spec.dataset.id!r} is gone: its networks' shapes are unknown"
        return [SpecProblem(("init_from", "job"), message)]
    return check_warm_start(spec, info, source_spec, source_info, source.id)


# --------------------------------------------------------------------------- defaults


def fill_defaults(spec: JobSpec, info: DatasetInfo) -> JobSpec:
    """`spec` with every default that depends on the data filled in, as the worker would derive it.

    Fills the gradient penalty's λ (models.catalog.default_gp_weight),
    training.sample_count (models.catalog.default_sample_count) and resources.queue (the service's default queue,
    GANFORGE_QUEUE); values the spec sets are kept.
    """
    body = spec.model_dump()
    loss = body["loss"]
    if loss.get("base", loss["name"]) in GRADIENT_PENALTY_LOSSES and loss.get("gp_weight") is None:
        loss["gp_weight"] = default_gp_weight(network_shape(spec, info))
    if body["training"]["sample_count"] is None:
        body["training"]["sample_count"] = default_sample_count(info.kind)
    if body["resources"]["queue"] is None:  # stored resolved: GET shows the queue the job waits in
        body["resources"]["queue"] = get_settings().queue
    return JobSpec.model_validate(body)


# --------------------------------------------------------------------------- memory


def memory_estimate(spec: JobSpec, info: DatasetInfo) -> MemoryEstimate:
    """models.memory's estimate for `spec` (defaults filled) on the data set `info` (before or after resize)."""
    return estimate_memory(spec, network_signature(spec, info), examples=info.size, labelled=info.num_classes > 0)


def _with_batch(spec: JobSpec, batch_size: int) -> JobSpec:
    return spec.model_copy(update={"training": spec.training.model_copy(update={"batch_size": batch_size})})


def largest_batch(spec: JobSpec, info: DatasetInfo, budget_bytes: int) -> int:
    """The largest training.batch_size (a multiple of training.pack, at most the schema's bound) whose estimate
    fits `budget_bytes`, the rest of `spec` unchanged; 0 when not even one pack fits."""
    pack = spec.training.pack
    largest = next(bound.le for bound in Training.model_fields["batch_size"].metadata if hasattr(bound, "le"))
    low, high = 0, largest // pack  # in packs
    while low < high:  # the estimate grows with the batch
        middle = (low + high + 1) // 2
        if memory_estimate(_with_batch(spec, middle * pack), info).total_bytes <= budget_bytes:
            low = middle
        else:
            high = middle - 1
    return low * pack


def check_memory(spec: JobSpec, info: DatasetInfo, budget_bytes: int) -> list[SpecProblem]:
    """[] when `spec` (defaults filled, compatible with `info`) fits a worker with `budget_bytes` of memory by
    models.memory's estimate; else one problem giving the estimate and the budget in GiB, at the field to change:
    `architecture` when the networks' own state (parameters, gradients, optimiser state, EMA) does not fit,
    `dataset` when the data set does not, `training.sample_count` when a snapshot's forward is what exceeds it,
    else `training.batch_size` (with the largest batch that fits)."""
    estimate = memory_estimate(spec, info)
    if estimate.total_bytes <= budget_bytes:
        return []
    parts = estimate.parts
    networks = parts["parameters"] + parts["gradients"] + parts["optimizer_state"] + parts["ema"]
    optimiser = "Adam" if spec.loss.optimizer == "adam" else "RMSProp"
    summary = (
        f"this job needs about {gib(estimate.total_bytes)} of memory, more than a worker's "
        f"{gib(budget_bytes)} (GANFORGE_WORKER_MEMORY_BYTES): {estimate.parameters:,} parameters in G and D, "
        f"whose weights, gradients, {optimiser} state{' and EMA copy of G' if parts['ema'] else ''} take "
        f"{gib(networks)}; the data set {gib(parts['data'])}; a training step's activations for a batch of "
        f"{spec.training.batch_size} {gib(parts['activations'])}; all × {SAFETY_FACTOR:g} for what the estimate "
        "leaves out"
    )
    if (processes := processes_sharing_memory(spec)) > 1:
        summary += f", × {processes} data-parallel CPU processes (resources.gpus)"
    fits = budget_bytes / SAFETY_FACTOR
    if networks > fits or max(parts["optimizer_scratch"], parts["checkpoint_copy"]) + networks > fits:
        return [SpecProblem(("architecture",), f"{summary}: the networks alone do not fit; make them smaller")]
    if parts["data"] > fits:
        return [SpecProblem(("dataset",), f"{summary}: the data set alone does not fit; use a smaller one")]
    if parts["snapshot"] >= parts["activations"]:
        return [
            SpecProblem(
                ("training", "sample_count"),
                f"{summary}: a snapshot of {spec.training.sample_count} "
                f"samples takes {gib(parts['snapshot'])}; ask for fewer",
            )
        ]
    batch = largest_batch(spec, info, budget_bytes)
    advice = (
        f"a batch of at most {batch} fits" if batch else "not even the smallest batch fits; make the networks smaller"
    )
    return [SpecProblem(("training", "batch_size"), f"{summary}: {advice}")]


def gpu_shortfall(asked: int, visible: int) -> str | None:
    """Why a job asking for `asked` GPUs (resources.gpus) cannot run on a GPU worker that sees `visible` of them;
    None when it can. For the scheduler's queue_reason and the worker's refusal (worker/ddp.py) alike. A CPU
    worker runs any resources.gpus as that many gloo processes (sharing its cores), so it has no shortfall."""
    if asked <= visible:
        return None
    return (
        f"resources.gpus is {asked} and this worker sees {visible} GPU{'s' if visible != 1 else ''}: it needs a "
        f"worker that sees at least {asked} (ganforge worker --gpu 0,1,... or no --gpu on a machine with enough)"
    )


def bounded_priority(spec: JobSpec, max_priority: int) -> tuple[JobSpec, list[SpecProblem]]:
    """The spec within the owner's quota max_priority: a `priority` given above it is a problem at `priority`; one
    left out is lowered to it (so an owner whose quota is below the default can still leave it out)."""
    if spec.priority <= max_priority:
        return spec, []
    if "priority" not in spec.model_fields_set:
        return spec.model_copy(update={"priority": max_priority}), []
    message = (
        f"{spec.priority} is above this owner's highest priority, {max_priority} "
        "(quota max_priority, GANFORGE_QUOTA_MAX_PRIORITY or GANFORGE_OWNER_QUOTAS)"
    )
    return spec, [SpecProblem(("priority",), message)]


def admit(*, spec: JobSpec, owner: str, store: AdmissionStore, memory_budget: int | None = None) -> JobSpec:
    """The spec as it will run for `owner`: checked against its data set, its warm start, a worker's memory
    (`memory_budget` bytes; default: the setting GANFORGE_WORKER_MEMORY_BYTES) and the owner's quota max_priority
    (bounded_priority), defaults filled.

    Raises DatasetNotFound when the spec names an upload the owner does not have, and
    SpecRejected carrying every problem (field path and message) when it cannot run.
    """
    spec, over = bounded_priority(spec, get_settings().quotas(owner).max_priority)
    info = dataset_info(spec.dataset, owner=owner, store=store)
    incompatible = check_compatible(spec, info)
    problems = over + incompatible + _warm_start_problems(spec, info, owner=owner, store=store)
    mlflow = spec.mlflow.model_dump() if spec.mlflow else None  # a tracking server the worker may call
    problems += [SpecProblem(loc, why) for loc, why in tracking_problems(mlflow, get_settings())]
    if incompatible:  # networks that cannot be built have no size
        raise SpecRejected(problems)
    filled = fill_defaults(spec, info)
    budget = get_settings().worker_memory_bytes if memory_budget is None else memory_budget
    problems += check_memory(filled, info, budget)
    if problems:
        raise SpecRejected(problems)
    return filled
