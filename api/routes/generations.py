"""Sample a trained job's generator: POST /v1/jobs/{id}/generate, run by a generate worker (never torch here).

The request is checked here against the job's spec and data set (models/generation.py), stored as a `generations`
row and sent on the generate queue (models/queue.py: `<queue>.generate`, consumed by `ganforge worker --generate`
only, so it never waits behind training jobs). The POST then polls the row for up to
GANFORGE_GENERATE_WAIT_SECONDS (or the smaller `?wait=`), every POLL_SECONDS, without holding a database connection
between polls or blocking the event loop: done in time, it answers 200 with the result's bytes; else 202 and
the URL to poll (`GET /v1/generations/{id}`, then `.../result`). A request no worker took or finished within
GANFORGE_GENERATE_EXPIRE_SECONDS is failed by the reconciler with that reason (api/reconciler.py).

What one owner can hold is bounded: GANFORGE_GENERATE_MAX_ACTIVE_PER_OWNER requests queued or running (one more is
a 429 with Retry-After, nothing stored), and results are kept GANFORGE_GENERATE_RESULT_TTL_SECONDS and at most
GANFORGE_GENERATE_MAX_RESULTS_PER_OWNER per owner (a newer one deletes the oldest): the reconciler and the generate
worker delete the files and mark the requests expired, and a GET of an expired result is a 410 saying why. A
succeeded request past its TTL reads as expired already, before the reconciler's next pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import ArtifactsDep, BrokerDep, CurrentKey, CurrentOwner, OwnedJob, SettingsDep, StoreDep, not_found
from api.errors import ApiError, error_body
from api.routes.results import steps_listed
from models.admission import DatasetNotFound, dataset_info, network_shape
from models.artifacts import ArtifactMissing, ArtifactStore
from models.datasets import DatasetInfo
from models.generation import GenerateRequest, check_against_job, has_ema, worker_params
from models.queue import generate_queue, send_generate
from models.records import Generation, GenerationStatus
from models.settings import Settings
from models.spec import STORED_SPEC, JobSpec, is_id
from models.store import JobStore, as_utc, utcnow
from models.store.generations import GenerationSourceGone, TooManyGenerations

log = logging.getLogger(__name__)
router = APIRouter(tags=["generate"])

POLL_SECONDS = 0.05  # between looks at the row while the POST waits: a 50 ms read of one row by its key
RETRY_AFTER_SECONDS = 2  # a 429's Retry-After: a request takes about a second on a CPU, so a slot frees soon


class GenerationOut(BaseModel):
    """A generate request and where it stands."""

    id: str
    job_id: str
    status: str = Field(description="queued, running, succeeded, failed, or expired (its result was deleted)")
    params: dict[str, Any] = Field(
        description="the request as it runs: step resolved, ema decided; {} once expired (its result deleted)"
    )
    error: str | None = Field(description="why it failed, or why its result is gone")
    media_type: str | None
    result_url: str | None = Field(description="where the result is, once succeeded")
    expires_at: datetime | None = Field(
        description="when a succeeded request's result is deleted (GANFORGE_GENERATE_RESULT_TTL_SECONDS after it "
        "finished; sooner when the owner's newer results pass GANFORGE_GENERATE_MAX_RESULTS_PER_OWNER)"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    key: str | None = Field(
        description="the key that asked: a store key's prefix, env:<owner> for an environment key, null with auth off"
    )

    @classmethod
    def of(cls, generation: Generation, settings: Settings) -> GenerationOut:
        aged = _aged(generation, settings)
        status, error = (GenerationStatus.EXPIRED, _aged_reason(settings)) if aged else (generation.status, None)
        done = status == GenerationStatus.SUCCEEDED
        return cls(
            id=generation.id,
            job_id=generation.job_id,
            status=status,
            params=generation.params,
            error=error or generation.error,
            media_type=generation.media_type,
            result_url=f"/v1/generations/{generation.id}/result" if done else None,
            expires_at=_expires_at(generation, settings) if done else None,
            # SQLite hands back naive datetimes: UTC with its Z, as on PostgreSQL and in the job/study outputs.
            created_at=as_utc(generation.created_at),
            started_at=as_utc(generation.started_at),
            finished_at=as_utc(generation.finished_at),
            key=generation.key_id,
        )


def _expires_at(generation: Generation, settings: Settings) -> datetime | None:
    if generation.finished_at is None:
        return None
    return as_utc(generation.finished_at) + timedelta(seconds=settings.generate_result_ttl_seconds)


def _aged(generation: Generation, settings: Settings) -> bool:
    """A succeeded request past its TTL that the reconciler has not expired yet: read as expired already."""
    if generation.status != GenerationStatus.SUCCEEDED:
        return False
    expires = _expires_at(generation, settings)
    return expires is not None and expires <= utcnow()


def _aged_reason(settings: Settings) -> str:
    return (
        f"its result was deleted {settings.generate_result_ttl_seconds:g} s after it was made "
        "(GANFORGE_GENERATE_RESULT_TTL_SECONDS); send the request again (the same seed gives the same samples)"
    )


class GenerationAccepted(BaseModel):
    """202: not done within the wait; poll `url`."""

    id: str
    status: str
    url: str


def _job_data(spec: JobSpec, owner: str, store: JobStore) -> tuple[DatasetInfo | None, tuple[int, ...] | None]:
    """The job's data set description and one sample's shape; (None, None) when the upload's record is gone."""
    try:
        info = dataset_info(spec.dataset, owner=owner, store=store)
    except DatasetNotFound:
        return None, None
    return info, network_shape(spec, info)


def _checkpoint_step(store: JobStore, job_id: str, step: int | str) -> int:
    """The step of the job's checkpoint `step` ("latest": the newest); 404 (a step that is not there, listing
    those that are) or 409 (no checkpoint yet) naming body field `step`."""
    checkpoint = store.get_checkpoint(job_id=job_id, step=None if step == "latest" else int(step))
    if checkpoint is not None:
        return checkpoint.step
    steps = [c.step for c in store.list_checkpoints(job_id=job_id)]
    if not steps:
        message = "this job has no checkpoint yet: generate once it has written one (every.checkpoint, and at the end)"
        raise ApiError(409, "no_checkpoint", message, [{"field": "step", "message": message}])
    message = f"no checkpoint at step {step}; this job's checkpoints: {steps_listed(steps)} (or 'latest')"
    raise ApiError(404, "not_found", message, [{"field": "step", "message": message}])


def _result(artifacts: ArtifactStore, generation: Generation) -> Response:
    """200 with the result's bytes (at most MAX_VALUES float32 values: read whole)."""
    assert generation.result_key is not None and generation.media_type is not None
    try:
        with artifacts.open(generation.result_key) as handle:
            content = handle.read()
    except ArtifactMissing:
        raise ApiError(
            404, "artifact_missing", "the file of this generation is missing from the artifact store"
        ) from None
    extension = generation.result_key.rsplit(".", 1)[-1]
    headers = {
        "X-Generation-Id": generation.id,
        "Content-Disposition": f'attachment; filename="{generation.job_id}-{generation.id[:8]}.{extension}"',
    }
    return Response(content, media_type=generation.media_type, headers=headers)


def _failed(generation: Generation) -> ApiError:
    """409 generation_failed with the worker's reason: the same answer from the POST and from .../result."""
    message = f"the generation failed: {generation.error or 'no reason recorded'}"
    return ApiError(409, "generation_failed", message)


@router.post(
    "/v1/jobs/{job_id}/generate",
    responses={
        200: {"content": {"image/png": {}, "application/x-npy": {}}, "description": "the samples (X-Generation-Id)"},
        202: {"model": GenerationAccepted, "description": "not done within the wait: poll url"},
        404: {"description": "no such job of yours, or no checkpoint at that step"},
        409: {"description": "the job has no checkpoint yet, or the generate worker failed (generation_failed)"},
        429: {"description": "GANFORGE_GENERATE_MAX_ACTIVE_PER_OWNER requests of yours are queued or running"},
    },
)
async def generate(
    body: GenerateRequest,
    job: OwnedJob,
    owner: CurrentOwner,
    key: CurrentKey,
    store: StoreDep,
    artifacts: ArtifactsDep,
    broker: BrokerDep,
    settings: SettingsDep,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            le=60,
            allow_inf_nan=False,
            description="seconds to wait for the result (at most GANFORGE_GENERATE_WAIT_SECONDS)",
        ),
    ] = None,
) -> Response:
    """`count` samples of the job's generator at checkpoint `step`: the .npy array (count×D points in the data's
    coordinates, not clamped: an mlp G has no tanh; or count×C×H×W images, in [-1, 1] from a dcgan or resnet G) or
    a PNG (a grid of images, a scatter plot of points).

    cgan: `labels` picks the classes; infogan: `codes` sets the codes; `ema` (default: when the job kept one)
    uses the EMA copy of G. The same request (seed included) gives the same samples. Answers 200 with the bytes
    when the worker is done within the wait, else 202 with the URL to poll. 422 (naming the field) for a count
    over the bound, labels on a job that is not cgan or outside its classes, codes that do not fit or a continuous
    code outside [-MAX_CONTINUOUS_CODE, MAX_CONTINUOUS_CODE]; 429 with Retry-After when the owner already has
    GANFORGE_GENERATE_MAX_ACTIVE_PER_OWNER requests queued or running.
    """
    spec = JobSpec.model_validate(job.spec, context=STORED_SPEC)  # as admitted
    info, shape = await run_in_threadpool(_job_data, spec, owner, store)
    problems = check_against_job(body, spec, info, shape)
    if problems:
        details = [{"field": p.field, "message": p.message} for p in problems]
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        raise ApiError(422, "validation_error", summary, details)
    step = await run_in_threadpool(_checkpoint_step, store, job.id, body.step)
    params = worker_params(body, step, has_ema(spec) if body.ema is None else body.ema)
    cap = settings.generate_max_active_per_owner
    try:
        generation = await run_in_threadpool(
            lambda: store.create_generation(job_id=job.id, owner=owner, params=params, max_active=cap, key_id=key)
        )
    except GenerationSourceGone as exc:  # deleted between the checks above and the insert
        if exc.step is None:
            raise not_found("job", job.id) from None
        message = f"no checkpoint at step {exc.step} any more (it was deleted): ask for another step, or 'latest'"
        raise ApiError(404, "not_found", message, [{"field": "step", "message": message}]) from None
    except TooManyGenerations as exc:
        message = (
            f"you have {exc.active} generate requests queued or running, the most allowed at once "
            f"(GANFORGE_GENERATE_MAX_ACTIVE_PER_OWNER={cap}): wait for one to finish, then send this again"
        )
        return JSONResponse(
            error_body("too_many_generations", message),
            status_code=429,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    try:
        await run_in_threadpool(send_generate, broker, generation.id, generate_queue(settings))
    except Exception:  # the broker is away: fail the request now rather than leave it queued
        log.warning("broker unreachable; generation %s failed", generation.id, exc_info=True)
        await run_in_threadpool(
            lambda: store.fail_generation(generation_id=generation.id, error="the broker could not be reached")
        )
        raise ApiError(503, "broker_unavailable", "the queue could not be reached: try again shortly") from None
    limit = settings.generate_wait_seconds if wait is None else min(wait, settings.generate_wait_seconds)
    deadline = time.monotonic() + limit
    current: Generation | None = generation
    while True:
        current = await run_in_threadpool(lambda: store.get_generation(generation_id=generation.id))
        if current is None or current.status in GenerationStatus.FINAL or time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL_SECONDS)
    if current is not None and current.status == GenerationStatus.SUCCEEDED:
        return await run_in_threadpool(_result, artifacts, current)
    if current is not None and current.status == GenerationStatus.FAILED:
        raise _failed(current)
    if current is not None and current.status == GenerationStatus.EXPIRED:  # only with a TTL shorter than the wait
        raise ApiError(410, "expired", f"the generation expired: {current.error or 'its result was deleted'}")
    url = f"/v1/generations/{generation.id}"
    status = current.status if current is not None else GenerationStatus.QUEUED
    return JSONResponse(
        GenerationAccepted(id=generation.id, status=status, url=url).model_dump(),
        status_code=202,
        headers={"Location": url, "X-Generation-Id": generation.id},
    )


def _owned(store: JobStore, owner: str, generation_id: str) -> Generation:
    generation = store.get_generation(generation_id=generation_id, owner=owner) if is_id(generation_id) else None
    if generation is None:
        raise not_found("generation", generation_id)
    return generation


@router.get("/v1/generations/{generation_id}", response_model=GenerationOut)
def get_generation(
    store: StoreDep, settings: SettingsDep, owner: CurrentOwner, generation_id: Annotated[str, Path()]
) -> GenerationOut:
    """The generate request and its status; `result_url` (and `expires_at`) once it succeeded, status `expired`
    once its result was deleted. Another owner's is a 404."""
    return GenerationOut.of(_owned(store, owner, generation_id), settings)


@router.get(
    "/v1/generations/{generation_id}/result",
    responses={
        200: {"content": {"image/png": {}, "application/x-npy": {}}},
        409: {"description": "not done, or failed"},
        410: {"description": "the result was deleted (expired: its TTL, or the owner's cap on kept results)"},
    },
)
def get_generation_result(
    store: StoreDep,
    artifacts: ArtifactsDep,
    settings: SettingsDep,
    owner: CurrentOwner,
    generation_id: Annotated[str, Path()],
) -> Response:
    """The samples of a succeeded generate request; 409 while it is queued or running, or when it failed; 410 when
    its result was deleted (GANFORGE_GENERATE_RESULT_TTL_SECONDS after it was made, or as one of the owner's oldest
    past GANFORGE_GENERATE_MAX_RESULTS_PER_OWNER)."""
    generation = _owned(store, owner, generation_id)
    if _aged(generation, settings):
        raise ApiError(410, "expired", f"the generation expired: {_aged_reason(settings)}")
    if generation.status == GenerationStatus.EXPIRED:
        raise ApiError(410, "expired", f"the generation expired: {generation.error or 'its result was deleted'}")
    if generation.status == GenerationStatus.SUCCEEDED:
        return _result(artifacts, generation)
    if generation.status == GenerationStatus.FAILED:
        raise _failed(generation)
    message = f"the generation is {generation.status}: poll GET /v1/generations/{generation.id} until it succeeded"
    raise ApiError(409, "not_ready", message)
