"""/v1/jobs: submit, list, read, cancel, delete (a job, or one of its checkpoints)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BeforeValidator

from api.deps import (
    ArtifactsDep,
    BrokerDep,
    CurrentKey,
    CurrentOwner,
    IdempotencyKey,
    OwnedJob,
    QueryText,
    SettingsDep,
    StoreDep,
    get_settings_now,
    get_store_now,
    not_found,
    plain_decimal,
)
from api.errors import ApiError, spec_problems_error
from api.routes.quota import QUOTA_403, check_submission_now, quota_error, steps_error, steps_problems
from api.schemas import JobOut, JobPage, ValidatedSpec
from models.admission import DatasetNotFound, SpecProblem, SpecRejected, admit
from models.artifacts import job_prefix
from models.queue import send_train
from models.records import Job, JobStatus
from models.settings import Settings
from models.spec import JobSpec
from models.store import DatasetGone, IdempotencyConflict, JobStore
from models.store.errors import InitFromGone
from models.store.quota import QuotaExceeded
from models.store.results import CheckpointInUse, JobInStudy, JobInUse, JobNotFinal

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# An integer in a query as clients write one: ASCII digits only. pydantic alone takes "1.0" and " 5" for 1 and 5.
QueryInt = Annotated[int, BeforeValidator(plain_decimal)]
# The paging parameters of every list (jobs, data sets, studies, samples, checkpoints); an invalid cursor is a 422
# on query.cursor (api/errors.py).
PAGE_LIMIT_MAX = 500
PageLimit = Annotated[QueryInt, Query(ge=1, le=PAGE_LIMIT_MAX, description="rows per page")]
PageCursor = Annotated[
    str | None, Query(max_length=64, description="the `next_cursor` of the previous page; omit for the first page")
]


@router.post(
    "",
    status_code=201,
    response_model=JobOut | ValidatedSpec,
    responses={200: {"model": JobOut}, 403: {"description": QUOTA_403}},
)
def submit_job(
    spec: JobSpec,
    store: StoreDep,
    broker: BrokerDep,
    owner: CurrentOwner,
    key: CurrentKey,
    settings: SettingsDep,
    response: Response,
    validate_only: Annotated[
        bool, Query(description="check the spec and return it with defaults; create nothing")
    ] = False,
    idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
) -> JobOut | ValidatedSpec:
    """Submit a training job. A retry with the same `Idempotency-Key` returns the same job.

    The stored spec is the admitted one: data-dependent defaults filled in, as it will run. The job's
    `submitted` status event records the submitting key's non-secret id as `key` (null with auth off).

    Quotas (GET /v1/quota): training.steps over steps_per_job is a 422 at `training.steps`; a job past the owner's
    queued_jobs, or any while it holds stored_bytes, a 403 `quota_exceeded` (nothing is stored).
    """
    quotas = settings.quotas(owner)
    over = steps_problems([("training.steps", spec.training.steps)], quotas)
    if over:
        raise steps_error(over)
    try:
        spec = admit(spec=spec, owner=owner, store=store)
    except DatasetNotFound as exc:  # another owner's data set is indistinguishable from a missing one
        raise _dataset_not_found(str(exc)) from None
    except SpecRejected as exc:
        raise spec_problems_error(exc.problems) from None
    if validate_only:
        check_submission_now(store, owner, quotas, adds=1)  # the 403 the submission would get now
        response.status_code = 200
        return ValidatedSpec(valid=True, spec=spec.model_dump(mode="json"))
    try:
        job, created = store.create_job(owner=owner, spec=spec, idempotency_key=idempotency_key, key=key, quotas=quotas)
    except QuotaExceeded as exc:
        raise quota_error(exc) from None
    except IdempotencyConflict:
        raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used with a different spec") from None
    except DatasetGone as exc:  # deleted between admission and the insert
        raise _dataset_not_found(str(exc)) from None
    except InitFromGone as exc:  # deleted between admission and the insert
        raise spec_problems_error([SpecProblem(("init_from", exc.field), exc.message)]) from None
    if created:
        try:
            send_train(broker, job.id, job.queue)
            store.mark_enqueued(job_id=job.id)
        except Exception:  # the job is stored: the reconciler sends it when the broker is back
            log.warning("broker unreachable; job %s stays queued for the reconciler", job.id, exc_info=True)
    else:
        response.status_code = 200
    return JobOut.of(job, queue_reason=queue_reason(store, job, settings))


def queue_reason(store: JobStore, job: Job, settings: Settings) -> str | None:
    """Why a queued job waits (LeaseStore.queue_reason), with the queues that live workers serve and the GPUs each
    of them sees: a worker unseen for two heartbeats (GANFORGE_WORKER_HEARTBEAT_SECONDS) is gone."""
    if job.status != JobStatus.QUEUED:
        return None
    seen = store.gpus_by_queue(within=timedelta(seconds=2 * settings.worker_heartbeat_seconds))
    return store.queue_reason(job=job, quotas_of=settings.quotas, served=seen.keys(), gpus_seen=seen)


def _dataset_not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message, [{"field": "dataset.id", "message": message}])


@router.get("", response_model=JobPage)
def list_jobs(
    store: StoreDep,
    owner: CurrentOwner,
    status: Annotated[str | None, Query(pattern="^(" + "|".join(JobStatus.ALL) + ")$")] = None,
    tag: Annotated[
        QueryText | None,
        Query(
            pattern="^[^:]+:.*$",
            description="only jobs whose spec has this tag, as `key:value` (split at the first ':', so a value may "
            "hold ':'; an empty value matches a tag set to \"\"), e.g. `tag=team:vision`; one tag per request",
            examples=["team:vision"],
        ),
    ] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> JobPage:
    """The caller's jobs, newest first; pass `next_cursor` back as `cursor` for the next page."""
    tag_pair = tuple(tag.split(":", 1)) if tag else None
    jobs, next_cursor = store.list_jobs(owner=owner, status=status, tag=tag_pair, limit=limit, cursor=cursor)  # type: ignore[arg-type]
    return JobPage(jobs=[JobOut.of(job) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job: OwnedJob, request: Request) -> JobOut:
    """The job; a queued one says why it still waits (`queue_reason`: its owner's running-jobs quota, or the
    jobs ahead of it by fair share)."""
    # The most frequent call (clients poll it): async, so a job that is not queued is answered on the event loop
    # after OwnedJob's one read (a queued one's reason reads the store in a worker thread), and the store and
    # settings taken from the request rather than as two more dependencies to solve.
    reason = None
    if job.status == JobStatus.QUEUED:
        reason = await anyio.to_thread.run_sync(queue_reason, get_store_now(request), job, get_settings_now(request))
    return JobOut.of(job, queue_reason=reason)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut)
def cancel_job(job: OwnedJob, store: StoreDep, owner: CurrentOwner, key: CurrentKey) -> JobOut:
    """Stop a job: a queued one at once, a running one at its next step (its last checkpoint is kept).

    The cancel's status event records the asking key's non-secret id as `key` (null with auth off)."""
    if job.status in JobStatus.FINAL:
        raise ApiError(409, "already_finished", f"job is already {job.status}")
    updated = store.request_cancel(job_id=job.id, owner=owner, key=key)
    assert updated is not None
    return JobOut.of(updated)


# DELETE /v1/jobs/{id} and /v1/jobs/{id}/checkpoints/{step} (issue 14; the deferred half of issue 12's stored_bytes).
_ERROR = {"$ref": "#/components/schemas/Error"}


def _example(status: int, code: str, message: str, description: str) -> dict[int | str, dict[str, Any]]:
    body = {"error": {"code": code, "message": message, "details": []}}
    return {status: {"description": description, "content": {"application/json": {"schema": _ERROR, "example": body}}}}


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    responses={
        **_example(
            409,
            "job_not_final",
            "job j-7f3a is running: only a job that has ended (succeeded, failed, cancelled) can be deleted; "
            "cancel it first",
            "the job has not ended (job_not_final), a queued or running job starts from its checkpoints "
            "(job_in_use), or it is one of a study's jobs (job_in_study)",
        ),
        **_example(404, "not_found", "no job 'j-7f3a'", "no such job of yours (another owner's is missing too)"),
    },
)
def delete_job(
    job: OwnedJob, store: StoreDep, artifacts: ArtifactsDep, owner: CurrentOwner, key: CurrentKey
) -> Response:
    """Delete an ended job and everything it produced: its record, events, metrics, sample snapshots, checkpoints,
    generate results and their files. The checkpoints' bytes leave the owner's stored_bytes (GET /v1/quota).

    409 `job_not_final` while the job is queued, running or cancelling (cancel it first); 409 `job_in_use` while a
    queued or running job's init_from names it; 409 `job_in_study` for a study's job (the study's record is made
    of its jobs). The API's log records the deleting key's id (the job's event log
    goes with it).
    """
    try:
        deleted = store.delete_job(job_id=job.id, owner=owner)
    except JobNotFinal as exc:
        message = (
            f"job {job.id} is {exc.status}: only a job that has ended (succeeded, failed, cancelled) can be deleted; "
            "cancel it first"
        )
        raise ApiError(409, "job_not_final", message) from None
    except JobInStudy as exc:
        message = f"job {job.id} is one of study {exc.study_id}'s jobs, which make its record (status, table)"
        raise ApiError(409, "job_in_study", message + ": it stays while the study does") from None
    except JobInUse as exc:
        message = f"job {job.id} is the init_from of {len(exc.users)} queued or running job(s): " + ", ".join(exc.users)
        raise ApiError(409, "job_in_use", message + "; delete it once they have started or ended") from None
    if deleted is None:
        raise not_found("job", job.id)
    for artifact in [*deleted.keys, job_prefix(job.id)]:
        try:
            artifacts.delete(artifact)
        except Exception:  # the rows are gone; a file left behind costs disk, not correctness
            log.warning("job %s deleted, but its artifact %s could not be", job.id, artifact, exc_info=True)
    log.info("job %s of %s deleted by key %s (%d checkpoint bytes freed)", job.id, owner, key, deleted.freed_bytes)
    return Response(status_code=204)


@router.delete(
    "/{job_id}/checkpoints/{step}",
    status_code=204,
    response_class=Response,
    responses={
        **_example(
            409,
            "checkpoint_in_use",
            "the checkpoint at step 2000 is needed: it is the latest of a job that is running (a resume starts there)",
            "the checkpoint is the latest of a job that has not ended, or a queued or running job's init_from or a "
            "pending generate request needs it (checkpoint_in_use)",
        ),
        **_example(
            404,
            "not_found",
            "no checkpoint at step 1500; this job's checkpoints: steps 1000, 2000",
            "no such job of yours, or no checkpoint at that step (pruned by retention, or deleted)",
        ),
    },
)
def delete_checkpoint(
    job: OwnedJob,
    store: StoreDep,
    artifacts: ArtifactsDep,
    key: CurrentKey,
    step: Annotated[str, Path(pattern=r"^[0-9]{1,12}$", description="the checkpoint's step")],
) -> Response:
    """Delete one checkpoint (its weights and resume state); its bytes leave the owner's stored_bytes. The job's
    event log records it as a `pruned` event with the deleting key's id.

    409 `checkpoint_in_use` for the latest checkpoint of a job that has not ended (its resume starts there) and for
    one a queued or running job's init_from or a pending generate request needs; 404 (listing the steps there are)
    when there is no checkpoint at `step`.
    """
    try:
        deleted = store.delete_checkpoint(job_id=job.id, step=int(step), key=key)
    except CheckpointInUse as exc:
        raise ApiError(409, "checkpoint_in_use", str(exc), [{"field": "path.step", "message": str(exc)}]) from None
    if deleted is None:
        raise missing_checkpoint(step, [c.step for c in store.list_checkpoints(job_id=job.id)])
    for artifact in (deleted.weights_key, deleted.state_key):
        artifacts.delete(artifact)
    return Response(status_code=204)


def missing_checkpoint(step: str, steps: list[int]) -> ApiError:
    """404 on path.step: no checkpoint at `step`, listing the job's."""
    shown = ", ".join(map(str, steps[:40])) + (" …" if len(steps) > 40 else "") if steps else "none"
    message = f"no checkpoint at step {step}; this job's checkpoints: {shown}"
    return ApiError(404, "not_found", message, [{"field": "path.step", "message": message}])
