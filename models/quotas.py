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

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ByteSize, ConfigDict, Field

PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 0, 100, 50
BYTES_MAX = 2**63 - 1  # the store's BIGINT


def _whole_number(value: Any) -> Any:
    """A count as JSON or the environment gives it: an int, or a string of one; never a bool (true is not 1) or a
    float. Raises ValueError otherwise (pydantic then names the setting and field)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be a whole number, not {type(value).__name__}")
    return value


def _storable_bytes(value: ByteSize) -> ByteSize:
    if value > BYTES_MAX:
        raise ValueError(f"must be at most {BYTES_MAX} bytes (8 EiB)")
    return value


Count = Annotated[int, BeforeValidator(_whole_number)]
# Bytes, or a size such as '500GiB'; at most BYTES_MAX.
Bytes = Annotated[ByteSize, BeforeValidator(_whole_number), AfterValidator(_storable_bytes)]


class Quotas(BaseModel):
    """One owner's limits. Counts are jobs; stored_bytes is bytes (accepts '500GiB')."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    running_jobs: Count = Field(default=8, ge=1, le=100_000, description="jobs one owner may have running at once")
    queued_jobs: Count = Field(
        default=1000, ge=1, le=1_000_000, description="jobs one owner may have waiting in the queue at once"
    )
    steps_per_job: Count = Field(default=1_000_000, ge=1, le=10**9, description="largest training.steps of one job")
    stored_bytes: Bytes = Field(
        default=ByteSize(100 * 1024**3), gt=0, description="data sets and artifacts one owner may keep, in bytes"
    )
    uploads_per_hour: Count = Field(
        default=60, ge=1, le=1_000_000, description="data set uploads one owner may make per hour"
    )
    max_priority: Count = Field(
        default=PRIORITY_DEFAULT,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description=f"highest `priority` ({PRIORITY_MIN}-{PRIORITY_MAX}) one owner's jobs may ask for",
    )


class QuotaOverride(BaseModel):
    """The fields one owner's override replaces (any subset of Quotas)."""

    model_config = ConfigDict(extra="forbid")

    running_jobs: Count | None = Field(default=None, ge=1, le=100_000)
    queued_jobs: Count | None = Field(default=None, ge=1, le=1_000_000)
    steps_per_job: Count | None = Field(default=None, ge=1, le=10**9)
    stored_bytes: Bytes | None = Field(default=None, gt=0)
    uploads_per_hour: Count | None = Field(default=None, ge=1, le=1_000_000)
    max_priority: Count | None = Field(default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX)


def quotas_for(defaults: Quotas, overrides: dict[str, QuotaOverride], owner: str) -> Quotas:
    """The owner's quotas: the defaults with the owner's override (if any) laid over them."""
    override = overrides.get(owner)
    if override is None:
        return defaults
    return defaults.model_copy(update=override.model_dump(exclude_none=True))
