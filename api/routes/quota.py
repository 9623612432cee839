"""/v1/quota: the caller's quotas and usage; and the quota checks the submit and upload routes share.

Quotas are settings (models/quotas.py): GANFORGE_QUOTA_<FIELD> defaults and GANFORGE_OWNER_QUOTAS per-owner
overrides. How each is answered:
- queued_jobs: 403 `quota_exceeded` (checked where the jobs are inserted: models/store/quota.py);
- stored_bytes: 403 `quota_exceeded` on a submission or upload while the owner holds that much or more;
- steps_per_job: 422 at `training.steps` (a study: the grid value or base steps over it);
- uploads_per_hour: 429 `quota_exceeded` with Retry-After (seconds until the oldest counted upload is an hour old).
A quota_exceeded error carries `quota` (the field), `limit` and `used` (jobs, or bytes for stored_bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import CurrentOwner, SettingsDep, StoreDep
from api.errors import ApiError
from models.quotas import Quotas
from models.store import JobStore
from models.store.quota import QuotaExceeded

router = APIRouter(prefix="/v1/quota", tags=["quota"])

# The 403 and 429 descriptions routes that check quotas give in OpenAPI.
QUOTA_403 = (
    "the key lacks the scope this needs (insufficient_scope), or the request would take the owner past a quota "
    "(quota_exceeded: `quota`, `limit`, `used` in the error; GET /v1/quota shows them all)"
)
UPLOAD_429 = "over the uploads_per_hour quota (quota_exceeded), with Retry-After in seconds"


def setting_name(quota: str) -> str:
    """The environment variable of a quota's default: queued_jobs → GANFORGE_QUOTA_QUEUED_JOBS."""
    return f"GANFORGE_QUOTA_{quota.upper()}"


def quota_error(exc: QuotaExceeded, *, status: int = 403, headers: dict[str, str] | None = None) -> ApiError:
    """The answer to a refused request: `status` (403, or 429 for a rate) with code quota_exceeded, a message
    naming the setting, and the error object's `quota`, `limit`, `used`, `setting` (its GANFORGE_QUOTA_* default's
    name) and, for job counts, `requested` (what the request would add)."""
    where = f"{setting_name(exc.quota)}, or the owner's entry in GANFORGE_OWNER_QUOTAS"
    if exc.quota == "queued_jobs" and exc.adds > exc.limit:
        # Waiting or cancelling cannot help: the submission alone is over the limit.
        message = (
            f"queued_jobs quota: this submission adds {exc.adds} jobs, more than the {exc.limit} allowed queued at "
            f"once, so it can never fit; submit fewer jobs (fewer losses, seeds or grid values) or ask for a larger "
            f"quota ({where})"
        )
    elif exc.quota == "queued_jobs":
        message = (
            f"queued_jobs quota: {exc.used} of {exc.limit} queued jobs in use and this submission adds {exc.adds}; "
            f"wait for jobs to start or cancel some ({where})"
        )
    elif exc.quota == "stored_bytes":
        message = (
            f"stored_bytes quota: {exc.used} bytes stored of {exc.limit} allowed (data sets and checkpoints); "
            "delete data sets (DELETE /v1/datasets/{id}), ended jobs (DELETE /v1/jobs/{id}) or checkpoints "
            f"(DELETE /v1/jobs/{{id}}/checkpoints/{{step}}), or ask for a larger quota ({where})"
        )
    elif exc.quota == "uploads_per_hour":
        wait = f"; the next fits in {headers['Retry-After']} s" if headers and "Retry-After" in headers else ""
        message = (
            f"uploads_per_hour quota: {exc.used} data sets uploaded in the last hour of {exc.limit} allowed{wait} "
            f"({where})"
        )
    else:
        message = f"{exc.quota} quota: {exc.used} of {exc.limit} used ({where})"
    extra: dict[str, Any] = {
        "quota": exc.quota,
        "limit": exc.limit,
        "used": exc.used,
        "setting": setting_name(exc.quota),
    }
    if exc.adds:
        extra["requested"] = exc.adds
    return ApiError(status, "quota_exceeded", message, headers=headers, extra=extra)


def steps_problems(steps: Sequence[tuple[str, int | float]], quotas: Quotas) -> list[dict[str, str]]:
    """422 details for each (field path, training.steps) over the steps_per_job quota ([] when none is)."""
    limit = quotas.steps_per_job
    return [
        {
            "field": field,
            "message": f"{value} steps is over the steps_per_job quota of {limit} "
            f"({setting_name('steps_per_job')}, or the owner's entry in GANFORGE_OWNER_QUOTAS)",
        }
        for field, value in steps
        if value > limit
    ]


def steps_error(problems: list[dict[str, str]]) -> ApiError:
    """The 422 for steps_problems' details."""
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in problems[:5])
    return ApiError(422, "validation_error", summary, problems)


def check_submission_now(store: JobStore, owner: str, quotas: Quotas, adds: int) -> None:
    """Raise the 403 a submission of `adds` jobs would get now (?validate_only=true, which stores nothing): the
    owner at stored_bytes, or its queued jobs plus `adds` past queued_jobs (the message says when `adds` alone is).
    The real submission checks again under the owner's lock (models/store/quota.py check_submission)."""
    usage = store.usage(owner=owner)
    if usage.stored_bytes >= quotas.stored_bytes:
        raise quota_error(QuotaExceeded("stored_bytes", limit=int(quotas.stored_bytes), used=usage.stored_bytes))
    if usage.queued_jobs + adds > quotas.queued_jobs:
        raise quota_error(QuotaExceeded("queued_jobs", limit=quotas.queued_jobs, used=usage.queued_jobs, adds=adds))


def check_upload(store: JobStore, owner: str, quotas: Quotas) -> None:
    """Raise the answer to an upload the owner may not make now: 403 while it holds stored_bytes or more, 429 with
    Retry-After when it created uploads_per_hour data sets in the last hour."""
    usage = store.usage(owner=owner)
    if usage.stored_bytes >= quotas.stored_bytes:
        raise quota_error(QuotaExceeded("stored_bytes", limit=int(quotas.stored_bytes), used=usage.stored_bytes))
    wait = usage.upload_retry_after(quotas.uploads_per_hour)
    if wait is not None:
        exceeded = QuotaExceeded("uploads_per_hour", limit=quotas.uploads_per_hour, used=usage.uploads_last_hour)
        raise quota_error(exceeded, status=429, headers={"Retry-After": str(wait)})


class QuotaUsage(BaseModel):
    running_jobs: int = Field(description="jobs running or cancelling")
    queued_jobs: int = Field(description="jobs waiting in the queue")
    stored_bytes: int = Field(
        description="bytes held: uploaded data sets and checkpoint weights files, as the store records them"
    )
    uploads_last_hour: int = Field(description="data sets created in the last hour")
    upload_retry_after_seconds: int | None = Field(
        description="at the uploads_per_hour quota: seconds until the next upload fits; null when one fits now"
    )


class QuotaOut(BaseModel):
    """The caller's quotas and what it uses of them now."""

    owner: str
    quotas: Quotas = Field(
        description="the limits (GANFORGE_QUOTA_* defaults with the owner's GANFORGE_OWNER_QUOTAS entry); "
        "stored_bytes in bytes"
    )
    usage: QuotaUsage


@router.get("", response_model=QuotaOut, summary="Your quotas and usage")
def get_quota(store: StoreDep, settings: SettingsDep, owner: CurrentOwner) -> QuotaOut:
    """The caller's quotas and current usage: running and queued jobs, stored bytes (data sets plus checkpoint
    weights), data sets uploaded in the last hour.

    A submission past queued_jobs, or while stored_bytes is reached, is a 403 `quota_exceeded`; training.steps over
    steps_per_job a 422; an upload past uploads_per_hour a 429 with Retry-After. A job that grows past
    stored_bytes while it runs is left to finish."""
    quotas = settings.quotas(owner)
    usage = store.usage(owner=owner)
    return QuotaOut(
        owner=owner,
        quotas=quotas,
        usage=QuotaUsage(
            running_jobs=usage.running_jobs,
            queued_jobs=usage.queued_jobs,
            stored_bytes=usage.stored_bytes,
            uploads_last_hour=usage.uploads_last_hour,
            upload_retry_after_seconds=usage.upload_retry_after(quotas.uploads_per_hour),
        ),
    )
