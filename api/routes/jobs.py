"""/v1/jobs: submit, list, read, cancel."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from pydantic import BeforeValidator

from api.deps import (
    BrokerDep,
    CurrentKey,
    CurrentOwner,
    IdempotencyKey,
    OwnedJob,
    QueryText,
    SettingsDep,
    StoreDep,
    plain_decimal,
)
from api.errors import ApiError, spec_problems_error
from api.routes.quota import QUOTA_403, check_submission_now, quota_error, steps_error, steps_problems
from api.schemas import JobOut, JobPage, ValidatedSpec
from models.admission import DatasetNotFound, SpecRejected, admit
from models.queue import send_train
from models.records import JobStatus
from models.spec import JobSpec
from models.store import DatasetGone, IdempotencyConflict
from models.store.quota import QuotaExceeded

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
    if created:
        try:
            send_train(broker, job.id)
            store.mark_enqueued(job_id=job.id)
        except Exception:  # the job is stored: the reconciler sends it when the broker is back
            log.warning("broker unreachable; job %s stays queued for the reconciler", job.id, exc_info=True)
    else:
        response.status_code = 200
    return JobOut.of(job, queue_reason=store.queue_reason(job=job, quotas_of=settings.quotas))


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
def get_job(job: OwnedJob, store: StoreDep, settings: SettingsDep) -> JobOut:
    """The job; a queued one says why it still waits (`queue_reason`: its owner's running-jobs quota, or the
    jobs ahead of it by fair share)."""
    return JobOut.of(job, queue_reason=store.queue_reason(job=job, quotas_of=settings.quotas))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut)
def cancel_job(job: OwnedJob, store: StoreDep, owner: CurrentOwner, key: CurrentKey) -> JobOut:
    """Stop a job: a queued one at once, a running one at its next step (its last checkpoint is kept).

    The cancel's status event records the asking key's non-secret id as `key` (null with auth off)."""
    if job.status in JobStatus.FINAL:
        raise ApiError(409, "already_finished", f"job is already {job.status}")
    updated = store.request_cancel(job_id=job.id, owner=owner, key=key)
    assert updated is not None
    return JobOut.of(updated)
