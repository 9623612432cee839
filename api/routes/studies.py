"""/v1/studies: one request trains the same data and architecture with several losses, seeds and grid points.

A study fans out into ordinary jobs (tagged study=<id>, so GET /v1/jobs?tag=study:<id> lists them, and events,
samples, checkpoints, cancel and resume work on each); GET compares their runs (models/comparison.py).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response
from pydantic import BaseModel, Field, ValidationError

from api.deps import BrokerDep, CurrentKey, CurrentOwner, IdempotencyKey, QueryText, SettingsDep, StoreDep, not_found
from api.errors import DETAILS_MAX, ApiError, _detail, plain_errors
from api.routes.jobs import PageCursor, PageLimit, QueryInt
from api.routes.quota import QUOTA_403, check_submission_now, quota_error, steps_error, steps_problems
from api.routes.results import RECORDED_METRICS
from models.admission import (
    DatasetNotFound,
    SpecProblem,
    bounded_priority,
    check_memory,
    dataset_info,
    fill_defaults,
)
from models.catalog import IMAGE_ARCHITECTURES, quality_measures
from models.comparison import Run, compare, curves, measures, series_needed
from models.datasets import DatasetInfo
from models.queue import send_train
from models.records import Job, Study
from models.spec import DatasetRef, is_id
from models.store import IdempotencyConflict, JobStore, as_utc
from models.store.errors import DatasetGone
from models.store.quota import QuotaExceeded
from models.store.studies import SERIES_POINTS_MAX, StudyFinished, StudyJobStats
from models.study import (
    LOSS_TAG,
    POINT_TAG,
    SEED_TAG,
    StudyRejected,
    StudySpec,
    expand,
    parse_point,
    problems_beside,
    resolved_losses,
    study_status,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/studies", tags=["studies"])

# Series names a curves request may ask for at once, and the characters of a name (the worker's series names).
CURVE_NAMES_MAX = 12
CURVE_POINTS_MAX = SERIES_POINTS_MAX
# Points per series the comparison reads (a systematic sample beyond: models/store/studies.py): its figures are
# statistics of the series, which a sample of 500 estimates well, and a 200-job study then reads at most
# 200 × 5 × 500 rows. Curves read twice the points they draw.
COMPARE_POINTS = 500
# Study answers (at most 200 jobs and rows each) kept per API process, keyed by the state of every job of the study
# (status, step, last event: any new metric, snapshot or transition changes it; times and compute seconds), so a
# page polling a study whose jobs did not move, or finished, costs one read of the job rows, not of every series.
# Curves (up to 2,000 points × 5 figures per loss and point) are not kept: too large to hold many of.
CACHED_ANSWERS = 32

EXAMPLE_STUDY = {
    "name": "ring8 losses",
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 128, "depth": 3},
    "losses": ["nsgan", "wgan", "wgan-gp"],
    "seeds": 3,
    "training": {"steps": 2000, "batch_size": 256},
    "every": {"metrics": 10, "samples": 200},
    "overrides": {"wgan": {"lr_d": 1e-4}},
    "grid": [{"param": "lr_multiplier", "values": [0.1, 1, 10]}],
    "tags": {"team": "research"},
}


# --------------------------------------------------------------------------- responses


class StudyProgress(BaseModel):
    steps_done: int = Field(
        description="generator steps actually trained, summed over the jobs (a succeeded job counts whole; a failed, "
        "cancelled or active one the steps it reached)"
    )
    steps_total: int = Field(description="generator steps of all the jobs as planned")
    fraction: float = Field(
        description="steps_done / steps_total, 0 to 1: stays below 1 for a study some of whose jobs failed or were "
        "cancelled (jobs_final says when nothing more will run)"
    )
    jobs_final: int = Field(description="jobs that succeeded, failed or were cancelled")
    jobs_total: int = Field(description="jobs of the study")


class StudyJob(BaseModel):
    id: str
    loss: str
    point: dict[str, float | int] = Field(description="the job's grid point, {} without a grid")
    seed: int
    status: str
    step: int
    total_steps: int


class StudySummary(BaseModel):
    id: str
    name: str
    status: str = Field(
        description="queued | running (a job is active) | cancelling (cancelled, some job not yet stopped) | "
        "succeeded (all succeeded) | failed (all final, one failed) | cancelled (cancelled and every job final)"
    )
    job_count: int
    counts: dict[str, int] = Field(description="jobs per status")
    progress: StudyProgress
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None

    @classmethod
    def of(cls, study: Study, stats: StudyJobStats | None) -> StudySummary:
        counts = stats.counts if stats else {}
        done, total, final = (stats.steps_done, stats.steps_total, stats.jobs_final) if stats else (0, 0, 0)
        return cls(
            id=study.id,
            name=study.name,
            status=study_status(cancelled=study.cancelled_at is not None, counts=counts),
            job_count=study.job_count,
            counts=counts,
            progress=StudyProgress(
                steps_done=done,
                steps_total=total,
                fraction=done / total if total else 0.0,
                jobs_final=final,
                jobs_total=study.job_count,
            ),
            created_at=as_utc(study.created_at),
            updated_at=as_utc(study.updated_at),
            cancelled_at=as_utc(study.cancelled_at),
        )


class StudyOut(StudySummary):
    spec: dict[str, Any] = Field(description="the study as it runs (`losses` filled in when left to the default)")
    jobs: list[StudyJob] = Field(description="its jobs in fan-out order: loss, grid point, seed")
    data_kind: str = Field(description="points | images: which quality measures apply")
    measures: list[str] = Field(
        description="the quality measures compared, primary first: only those the data set reports (points: "
        "modes_covered, hq_fraction, reverse_kl on ring8/grid25; images: fd on labelled data, plus class_accuracy "
        "for cgan and code_purity for infogan); [] when it reports none"
    )
    comparison: list[dict[str, Any]] = Field(
        description="one row per (loss, grid point): mean ± std over seeds (failed and cancelled runs left out, "
        "counted in `failed`) of each measure at the last snapshot, "
        "steps to its threshold, wall/CPU/GPU seconds and stability figures (models/comparison.py says how each "
        "is computed)"
    )


class StudyPage(BaseModel):
    studies: list[StudySummary]
    next_cursor: str | None


class ValidatedStudy(BaseModel):
    valid: bool
    spec: dict[str, Any] = Field(description="the study as it would run (`losses` filled in)")
    job_count: int


class CurvesOut(BaseModel):
    names: list[str]
    curves: dict[str, list[dict[str, Any]]] = Field(
        description="series name → one entry per (loss, point): {loss, point, steps, mean, std, min, max, count, "
        "runs} over the seeds on a common step grid"
    )


# --------------------------------------------------------------------------- dependencies


def owned_study(store: StoreDep, owner: CurrentOwner, study_id: Annotated[str, Path()]) -> Study:
    """The caller's study; another owner's and a string that is no id are as missing as a missing one (404)."""
    study = store.get_study(study_id=study_id, owner=owner) if is_id(study_id) else None
    if study is None:
        raise not_found("study", study_id)
    return study


OwnedStudy = Annotated[Study, Depends(owned_study)]


def _rejected(problems: list[SpecProblem]) -> ApiError:
    details = [{"field": ".".join(map(str, p.loc)), "message": p.message} for p in problems]
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return ApiError(422, "validation_error", summary, details)


def _dataset_not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message, [{"field": "dataset.id", "message": message}])


# --------------------------------------------------------------------------- routes


@router.post(
    "",
    status_code=201,
    response_model=StudyOut | ValidatedStudy,
    responses={
        200: {"model": StudyOut, "description": "an idempotent replay, or ?validate_only=true"},
        403: {"description": QUOTA_403},
    },
    summary="Start a study",
)
def create_study(
    body: Annotated[
        dict[str, Any],
        Body(
            description="a study (models/study.py StudySpec): every problem of it comes back in one 422",
            openapi_examples={"ring8": {"summary": "3 losses × 3 learning rates × 3 seeds", "value": EXAMPLE_STUDY}},
        ),
    ],
    store: StoreDep,
    broker: BrokerDep,
    owner: CurrentOwner,
    key: CurrentKey,
    settings: SettingsDep,
    response: Response,
    validate_only: Annotated[
        bool, Query(description="check the study and say how many jobs it makes; create nothing")
    ] = False,
    idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
) -> StudyOut | ValidatedStudy:
    """Train the same data and architecture with each loss × grid point × seed, as ordinary jobs.

    `losses` left out: every loss that can train on the data. `seeds`: a count (seeds 0..n-1) or a list.
    `grid`: up to two axes (`lr_multiplier` scales each loss's learning rates; or a spec field such as
    `architecture.hidden`). At most 200 jobs. Every problem is a 422 at its field path in the study
    (`losses.1`, `overrides.wgan.lr_d`, `grid.0.values.2`). A retry with the same `Idempotency-Key`
    returns the same study (200); the key with another body is a 409. Each job's `submitted` status event
    records the submitting API key's non-secret id as `key` (null with auth off).

    Quotas (GET /v1/quota): a job's training.steps over steps_per_job is a 422 at the grid value or the base
    `training.steps` that sets it; a study whose jobs would take the owner past queued_jobs (all its jobs count),
    or any while the owner holds stored_bytes, a 403 `quota_exceeded` (nothing is stored).
    """
    study = _study_spec(body, store, owner)
    quotas = settings.quotas(owner)
    over = steps_problems(_study_steps(study), quotas)
    if over:
        raise steps_error(over)
    try:
        info = dataset_info(study.dataset, owner=owner, store=store)
    except DatasetNotFound as exc:
        raise _dataset_not_found(str(exc)) from None
    study_id = str(uuid.uuid4())
    try:
        cells = expand(study, study_id, info=info)
    except StudyRejected as exc:
        raise _rejected(exc.problems) from None
    spec_json = study.model_dump(mode="json") | {"losses": resolved_losses(study, cells)}
    # The owner's quota max_priority holds for a study's jobs as for a job alone (said once, at `priority`).
    bounded = [bounded_priority(cell.spec, quotas.max_priority) for cell in cells]
    if over_priority := next((problems for _, problems in bounded if problems), None):
        raise _rejected(over_priority)
    jobs = [fill_defaults(spec, info) for spec, _ in bounded]
    # Each job must fit a worker, as a job submitted alone must (models/admission.py admit): one problem per field.
    too_big = {p.loc: p for job in jobs for p in check_memory(job, info, settings.worker_memory_bytes)}
    if too_big:
        raise _rejected(list(too_big.values()))
    if validate_only:
        check_submission_now(store, owner, quotas, adds=len(cells))  # the 403 the study would get now
        response.status_code = 200
        return ValidatedStudy(valid=True, spec=spec_json, job_count=len(cells))
    try:
        created_study, created = store.create_study(
            study_id=study_id,
            owner=owner,
            name=study.name,
            spec_json=spec_json,
            request_json=study.model_dump(mode="json"),
            jobs=jobs,
            idempotency_key=idempotency_key,
            key=key,
            quotas=quotas,
        )
    except QuotaExceeded as exc:
        raise quota_error(exc) from None
    except IdempotencyConflict:
        raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used with a different study") from None
    except DatasetGone as exc:  # deleted between admission and the insert
        raise _dataset_not_found(str(exc)) from None
    if created:
        _enqueue(store, broker, [job.id for job in store.study_jobs(study_id=created_study.id)])
    else:
        response.status_code = 200
    return _study_out(store, created_study)


def _study_steps(study: StudySpec) -> list[tuple[str, int | float]]:
    """Where the study's jobs get their training.steps: each value of a grid axis over it (`grid.<k>.values.<j>`),
    else the base `training.steps`."""
    on_grid = [
        (f"grid.{k}.values.{j}", value)
        for k, axis in enumerate(study.grid)
        if axis.param == "training.steps"
        for j, value in enumerate(axis.values)
    ]
    return on_grid or [("training.steps", study.training.steps)]


def _study_spec(body: dict[str, Any], store: JobStore, owner: str) -> StudySpec:
    """The body as a StudySpec, or a 422 with every problem of it at once: the fields pydantic refuses, and what
    the study's own checks (expand) find in the rest, each invalid top-level field left at its default for them."""
    try:
        return StudySpec.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
    details = []
    # Without pydantic's union labels in the paths (architecture.spectral_norm, not architecture.mlp.spectral_norm).
    located = [{**error, "loc": ("body", *error["loc"])} for error in errors[:DETAILS_MAX]]
    for error in plain_errors(located, body):
        detail = _detail(error)
        details.append({"field": detail["field"], "message": detail["message"].removeprefix("Value error, ")})
    failed = {str(error["loc"][0]) for error in errors if error["loc"]}
    required = {name for name, field in StudySpec.model_fields.items() if field.is_required()}
    if len(errors) <= DETAILS_MAX and not failed & required:
        rest = {key: value for key, value in body.items() if key not in failed}
        try:
            partial = StudySpec.model_validate(rest)
            cells_problems: list[SpecProblem] = []
            try:
                expand(partial, "check", info=dataset_info(partial.dataset, owner=owner, store=store))
            except StudyRejected as rejected:
                cells_problems = rejected.problems
            for problem in problems_beside(failed, cells_problems):
                details.append({"field": ".".join(map(str, problem.loc)), "message": problem.message})
        except (ValidationError, DatasetNotFound):  # the rest has its own problems, or no data set: said once fixed
            pass
    summary = "; ".join(f"{d['field'] or '(body)'}: {d['message']}" for d in details[:5])
    raise ApiError(422, "validation_error", summary, details)


def _enqueue(store: JobStore, broker: Any, job_ids: list[str]) -> None:
    """Wake a worker for each job, as POST /v1/jobs does; what the broker loses, the reconciler re-sends."""
    sent = []
    try:
        for job_id in job_ids:
            send_train(broker, job_id)
            sent.append(job_id)
    except Exception:  # the jobs are stored: the reconciler sends the rest when the broker is back
        log.warning("broker unreachable; %d job(s) stay queued for the reconciler", len(job_ids) - len(sent))
    if sent:
        store.mark_jobs_enqueued(job_ids=sent)


@router.get("", response_model=StudyPage, summary="List studies")
def list_studies(
    store: StoreDep,
    owner: CurrentOwner,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> StudyPage:
    """The caller's studies, newest first; pass `next_cursor` back as `cursor` for the next page."""
    studies, next_cursor = store.list_studies(owner=owner, limit=limit, cursor=cursor)
    stats = store.study_job_stats(study_ids=[s.id for s in studies])
    return StudyPage(studies=[StudySummary.of(s, stats.get(s.id)) for s in studies], next_cursor=next_cursor)


@router.get("/{study_id}", response_model=StudyOut, summary="A study: progress and the comparison")
def get_study(study: OwnedStudy, store: StoreDep, owner: CurrentOwner) -> StudyOut:
    """Progress, every job, and the comparison: one row per (loss, grid point) over the seeds.

    Each quality measure the data set reports (points on ring8/grid25: modes_covered, hq_fraction, reverse_kl;
    labelled images: fd, class_accuracy for cgan, code_purity for infogan) as mean ± sample std at each run's last
    snapshot; steps to its threshold; wall, CPU and GPU seconds; stability figures from the series. A failed or
    cancelled run is left out of every mean ± std and counted in its row's `failed`. Rows fill in as jobs write
    snapshots.
    """
    return _study_out(store, study, owner=owner)


@router.get("/{study_id}/curves", response_model=CurvesOut, summary="A study's series overlaid per loss")
def get_curves(
    study: OwnedStudy,
    store: StoreDep,
    owner: CurrentOwner,
    names: Annotated[
        QueryText | None,
        Query(
            max_length=1000,
            description="comma-separated series names the worker records (e.g. loss_g,modes_covered; another name "
            "is a 422 listing them); default: what the comparison reads (loss_g, grad_norm_g and the quality "
            "measures the data set reports)",
        ),
    ] = None,
    points: Annotated[QueryInt, Query(ge=2, le=CURVE_POINTS_MAX, description="steps per curve at most")] = 200,
) -> CurvesOut:
    """Per series and (loss, grid point): mean, std, min and max over the seeds on a common step grid."""
    info, builtin = _data(store, study, owner)
    losses = _losses(study)
    if names is None:
        wanted = series_needed(info.kind, losses, reported=_reported(info, builtin, losses))
    else:
        wanted = list(dict.fromkeys(name.strip() for name in names.split(",")))
        bad = [n for n in wanted if not n or len(n) > 64 or not n.replace("_", "").isalnum() or not n.isascii()]
        if bad or len(wanted) > CURVE_NAMES_MAX:
            message = f"give 1 to {CURVE_NAMES_MAX} comma-separated series names (letters, digits, '_')"
            raise ApiError(422, "validation_error", message, [{"field": "query.names", "message": message}])
        # A name no worker records would answer an empty curve for ever: say so, and which names there are.
        unknown = [n for n in wanted if n not in RECORDED_METRICS]
        if unknown:
            message = (
                f"no series {', '.join(map(repr, unknown))}: a study's jobs record "
                f"{', '.join(sorted(RECORDED_METRICS))}"
            )
            raise ApiError(422, "validation_error", message, [{"field": "query.names", "message": message}])
    jobs = store.study_jobs(study_id=study.id)
    runs = _runs(store, jobs, wanted, max_points=min(2 * points, SERIES_POINTS_MAX))
    return CurvesOut.model_validate(curves(runs, wanted, points=points))


@router.post(
    "/{study_id}/cancel",
    status_code=202,
    response_model=StudyOut,
    responses={409: {"description": "every job of the study had finished (code already_finished)"}},
    summary="Cancel a study",
)
def cancel_study(study: OwnedStudy, store: StoreDep, owner: CurrentOwner, key: CurrentKey) -> StudyOut:
    """Cancel every active job of the study (queued ones at once, running ones at their next step).

    The study reads `cancelling` until every job has stopped, then `cancelled`. Idempotent on a cancelled
    study; a study whose jobs had all finished keeps its status (succeeded or failed): 409 already_finished,
    as POST /v1/jobs/{id}/cancel answers for a finished job. Each job's cancel status event records the asking
    API key's non-secret id as `key` (null with auth off).
    """
    try:
        updated = store.cancel_study(study_id=study.id, owner=owner, key=key)
    except StudyFinished as exc:
        raise ApiError(409, "already_finished", str(exc)) from None
    assert updated is not None  # owned_study found it, and studies are never deleted
    return _study_out(store, updated, owner=owner)


# --------------------------------------------------------------------------- building the answer


def _losses(study: Study) -> list[str]:
    """The study's losses as stored."""
    return [str(loss) for loss in study.spec.get("losses") or []]


def _data(store: JobStore, study: Study, owner: str | None) -> tuple[DatasetInfo, str]:
    """The study's data set description, and its built-in name ("" for an upload, possibly deleted since)."""
    ref = DatasetRef.model_validate(study.spec["dataset"])
    try:
        return dataset_info(ref, owner=owner or study.owner, store=store), ref.builtin or ""
    except DatasetNotFound:
        # The upload is gone (a study's jobs hold it only while active): the architecture tells the kind; the
        # jobs' own series still say what they measured.
        images = study.spec.get("architecture", {}).get("name") in IMAGE_ARCHITECTURES
        return DatasetInfo(kind="images" if images else "points", shape=(1,), num_classes=2 if images else 0), ""


def _reported(info: DatasetInfo, builtin: str, losses: list[str]) -> set[str]:
    """The quality figures the worker reports for some loss of the study on this data (models/catalog.py, in step
    with worker/quality.py): PacGAN's on ring8/grid25 only, fd and the rest on labelled images only."""
    labelled = info.num_classes >= 2
    return {
        name
        for loss in losses
        for name in quality_measures(info.kind, loss, dataset=builtin, labelled=labelled, inception=False)
    }


def _runs(store: JobStore, jobs: list[Job], names: list[str], *, max_points: int) -> list[Run]:
    series = store.study_series(job_ids=[job.id for job in jobs], names=names, max_points=max_points)
    runs = []
    for job in jobs:
        started, finished = as_utc(job.started_at), as_utc(job.finished_at)
        runs.append(
            Run(
                job_id=job.id,
                loss=str(job.tags.get(LOSS_TAG, job.spec.get("loss", {}).get("name", ""))),
                point=parse_point(str(job.tags.get(POINT_TAG, ""))),
                seed=int(job.tags.get(SEED_TAG, job.spec.get("training", {}).get("seed", 0))),
                status=job.status,
                step=job.step,
                total_steps=job.total_steps,
                series=series.get(job.id, {}),
                wall_seconds=(finished - started).total_seconds() if started and finished else None,
                cpu_seconds=job.cpu_seconds,
                gpu_seconds=job.gpu_seconds,
                alerts=job.alerts or [],
                error=job.error,
            )
        )
    return runs


def _study_out(store: JobStore, study: Study, *, owner: str | None = None) -> StudyOut:
    jobs = store.study_jobs(study_id=study.id)

    def compute() -> StudyOut:
        info, builtin = _data(store, study, owner)
        losses = _losses(study)
        reported = _reported(info, builtin, losses)
        runs = _runs(store, jobs, series_needed(info.kind, losses, reported=reported), max_points=COMPARE_POINTS)
        # The modes of a built-in 2-D mixture are its labels (ring8: 8, grid25: 25): modes_covered's threshold.
        modes = info.num_classes if builtin and info.kind == "points" and info.num_classes else None
        summary = StudySummary.of(study, store.study_job_stats(study_ids=[study.id]).get(study.id))
        return StudyOut(
            **summary.model_dump(),
            spec=study.spec,
            jobs=[
                StudyJob(
                    id=run.job_id,
                    loss=run.loss,
                    point=run.point,
                    seed=run.seed,
                    status=run.status,
                    step=run.step,
                    total_steps=run.total_steps,
                )
                for run in runs
            ],
            data_kind=info.kind,
            measures=[m.name for m in measures(info.kind, losses, reported=reported)],
            comparison=compare(runs, data_kind=info.kind, modes=modes, reported=reported),
        )

    return _cached(_state(study, jobs), compute)


def _state(study: Study, jobs: list[Job]) -> tuple[Hashable, ...]:
    """What a study's answer depends on that can change: its cancel mark, and each job's status, step, events (each
    metric batch, snapshot, alert, transition), times and compute seconds (written without an event)."""
    return (
        study.id,
        study.cancelled_at,
        tuple(
            (job.id, job.status, job.step, job.last_event, job.finished_at, job.cpu_seconds, job.gpu_seconds)
            for job in jobs
        ),
    )


_answers: OrderedDict[Hashable, StudyOut] = OrderedDict()
_answers_lock = threading.Lock()


def _cached(key: Hashable, compute: Callable[[], StudyOut]) -> StudyOut:
    """compute(), or the answer computed for the same key before (the CACHED_ANSWERS most recent are kept)."""
    with _answers_lock:
        if key in _answers:
            _answers.move_to_end(key)
            return _answers[key]
    answer = compute()
    with _answers_lock:
        _answers[key] = answer
        while len(_answers) > CACHED_ANSWERS:
            _answers.popitem(last=False)
    return answer
