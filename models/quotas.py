"""Per-owner quotas: what one team may hold and run at once, with per-owner overrides.

Settings: the defaults come from GANFORGE_QUOTA_* (e.g. GANFORGE_QUOTA_RUNNING_JOBS=4), and
GANFORGE_OWNER_QUOTAS is a JSON object {owner: {field: value}} that replaces fields for one owner, e.g.
'{"vision-team": {"running_jobs": 16, "stored_bytes": "2TiB"}}'. A field left out keeps the default.

How each is enforced (SageMaker's service quotas and Determined's resource pools are the models):
  running_jobs     a job over it waits in `queued` with the reason shown; the scheduler claims it later
  queued_jobs      a submission past it is refused, 403 `quota_exceeded` naming the limit
  steps_per_job    a spec with more `training.steps` is refused, 422 at `training.steps`
  stored_bytes     an upload or submission while the owner holds this much (data sets + artifacts): 403
  uploads_per_hour an upload past it: 429 with Retry-After
  max_priority     a job's `priority` above it: 422 at `priority`
"""

from __future__ import annotations

from pydantic import BaseModel, ByteSize, ConfigDict, Field

PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 0, 100, 50


class Quotas(BaseModel):
    """One owner's limits. Counts are jobs; stored_bytes is bytes (accepts '500GiB')."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    running_jobs: int = Field(default=8, ge=1, le=100_000, description="jobs one owner may have running at once")
    queued_jobs: int = Field(
        default=1000, ge=1, le=1_000_000, description="jobs one owner may have waiting in the queue at once"
    )
    steps_per_job: int = Field(default=1_000_000, ge=1, le=10**9, description="largest training.steps of one job")
    stored_bytes: ByteSize = Field(
        default=ByteSize(100 * 1024**3), gt=0, description="data sets and artifacts one owner may keep, in bytes"
    )
    uploads_per_hour: int = Field(
        default=60, ge=1, le=1_000_000, description="data set uploads one owner may make per hour"
    )
    max_priority: int = Field(
        default=PRIORITY_DEFAULT,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description=f"highest `priority` ({PRIORITY_MIN}-{PRIORITY_MAX}) one owner's jobs may ask for",
    )


class QuotaOverride(BaseModel):
    """The fields one owner's override replaces (any subset of Quotas)."""

    model_config = ConfigDict(extra="forbid")

    running_jobs: int | None = Field(default=None, ge=1, le=100_000)
    queued_jobs: int | None = Field(default=None, ge=1, le=1_000_000)
    steps_per_job: int | None = Field(default=None, ge=1, le=10**9)
    stored_bytes: ByteSize | None = Field(default=None, gt=0)
    uploads_per_hour: int | None = Field(default=None, ge=1, le=1_000_000)
    max_priority: int | None = Field(default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX)


def quotas_for(defaults: Quotas, overrides: dict[str, QuotaOverride], owner: str) -> Quotas:
    """The owner's quotas: the defaults with the owner's override (if any) laid over them."""
    override = overrides.get(owner)
    if override is None:
        return defaults
    return defaults.model_copy(update=override.model_dump(exclude_none=True))
