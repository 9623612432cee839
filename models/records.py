"""The job store's tables (SQLAlchemy 2 typed ORM). Alembic migrations mirror these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
# The largest integer a BIGINT column (and SQLite's INTEGER) holds: every integer a client sends is bounded by it.
DB_INT_MAX = 2**63 - 1
DB_INT_MIN = -(2**63)


# Settings.queue's default: the queue of a job stored without resources.queue (submission resolves it first).
DEFAULT_QUEUE = "ganforge"


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON, list[Any]: JSON}


class JobStatus:
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    ALL = (QUEUED, RUNNING, CANCELLING, SUCCEEDED, FAILED, CANCELLED)
    ACTIVE = (QUEUED, RUNNING, CANCELLING)
    FINAL = (SUCCEEDED, FAILED, CANCELLED)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_owner_seq", "owner", "seq"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_status_priority_seq", "status", "priority", "seq"),
        Index("ix_jobs_status_queue_priority_seq", "status", "queue", "priority", "seq"),
        Index("ix_jobs_study_id", "study_id"),
    )

    # seq orders jobs for keyset pagination; id is the public name.
    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    owner: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]
    tags: Mapped[dict[str, Any]]
    dataset_id: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    spec_hash: Mapped[str] = mapped_column(String(64))
    # The attempt running or next to run (1-based): only attempts that failed (crash, lease expiry) advance it,
    # and it never exceeds max_attempts. Shown to users.
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    # The lease's fencing token: every claim increments it, so a worker that lost its lease can write nothing.
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The lease token that already had an attempt forgiven (forgive_attempt gives back at most one per lease).
    forgiven_token: Mapped[int | None] = mapped_column(BigInteger)
    worker: Mapped[str | None] = mapped_column(String(255))
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    total_steps: Mapped[int] = mapped_column(BigInteger)
    steps_per_sec: Mapped[float | None] = mapped_column(Float)
    latest_metrics: Mapped[dict[str, Any]]
    error: Mapped[str | None] = mapped_column(Text)
    last_event: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    enqueued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    # The study that fanned this job out (its cell is in tags: study, study_loss, study_point, study_seed).
    study_id: Mapped[str | None] = mapped_column(String(36))
    # What training.watch found: [{"kind": "collapse"|"divergence", "step", "evidence", "action"}], newest last.
    alerts: Mapped[list[Any] | None] = mapped_column(JSON)
    # Training time summed over attempts: process CPU seconds, and wall seconds on a GPU (None: never on one).
    cpu_seconds: Mapped[float | None] = mapped_column(Float)
    gpu_seconds: Mapped[float | None] = mapped_column(Float)
    # 0-100, higher first among waiting jobs (models/quotas.py bounds it per owner; the scheduler orders by it).
    priority: Mapped[int] = mapped_column(Integer, default=50, server_default="50")
    # The named queue whose workers may take the job (resources.queue, resolved at submission; DEFAULT_QUEUE).
    queue: Mapped[str] = mapped_column(String(64), default=DEFAULT_QUEUE)


class Study(Base):
    """A study: one request fanned out into ordinary jobs (loss × grid point × seed) tagged with its id."""

    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_studies_owner_idempotency_key"),
        Index("ix_studies_owner_seq", "owner", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    owner: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200), default="")
    spec: Mapped[dict[str, Any]]
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    spec_hash: Mapped[str] = mapped_column(String(64))
    job_count: Mapped[int] = mapped_column(Integer)
    cancelled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class GenerationStatus:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"  # succeeded, then its result was deleted (generate_result_ttl_seconds, or the owner's cap)

    ALL = (QUEUED, RUNNING, SUCCEEDED, FAILED, EXPIRED)
    FINAL = (SUCCEEDED, FAILED, EXPIRED)


class Generation(Base):
    """One request to sample a trained job's generator (POST /v1/jobs/{id}/generate), run on a worker."""

    __tablename__ = "generations"
    __table_args__ = (Index("ix_generations_job_id", "job_id"),)

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    owner: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    result_key: Mapped[str | None] = mapped_column(String(512))
    media_type: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The key that asked: a store key's prefix, "env:<owner>", or None with auth off.
    key_id: Mapped[str | None] = mapped_column(String(64))


class JobEvent(Base):
    """The job's event log: status transitions, metric batches, samples, checkpoints.

    `seq` is per job and allocated under the job row's lock, so events commit in
    seq order and a reader resuming after seq N misses nothing.
    """

    __tablename__ = "job_events"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    time: Mapped[datetime]
    data: Mapped[dict[str, Any]]


class MetricChunk(Base):
    """A run of one metric series: up to CHUNK_POINTS points packed in step order (models/store/results.py).

    `steps` is little-endian int64, `values` little-endian float64, both `count` long and sorted by step with no
    step twice; `rollup` holds, per run of ROLLUP_GROUP consecutive points, (min value, its step, max value, its
    step) as <f8, <i8, <f8, <i8. The chunks of one series never overlap in steps, so a replayed step overwrites
    (the write merges overlapping chunks) and a read never deduplicates.
    """

    __tablename__ = "metric_chunks"
    __table_args__ = (Index("ix_metric_chunks_series", "job_id", "name", "last_step"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    first_step: Mapped[int] = mapped_column(BigInteger)
    last_step: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    first_value: Mapped[float] = mapped_column(Float)
    last_value: Mapped[float] = mapped_column(Float)
    steps: Mapped[bytes] = mapped_column(LargeBinary)
    values: Mapped[bytes] = mapped_column(LargeBinary)
    rollup: Mapped[bytes] = mapped_column(LargeBinary)


class Sample(Base):
    __tablename__ = "samples"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    png_key: Mapped[str] = mapped_column(String(512))
    npy_key: Mapped[str] = mapped_column(String(512))
    labels: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    weights_key: Mapped[str] = mapped_column(String(512))
    state_key: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class Dataset(Base):
    """An uploaded data set, normalised once into one canonical stored form."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("owner", "content_hash", name="uq_datasets_owner_hash"),)

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    owner: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(16))
    info: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    data_key: Mapped[str] = mapped_column(String(512))
    preview_key: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime]
    # The key that uploaded it: a store key's prefix, "env:<owner>", or None with auth off.
    key_id: Mapped[str | None] = mapped_column(String(64))


class ApiKey(Base):
    """An API key held in the store: `gf_<8 chars>_<secret>`, shown once; only its SHA-256 is kept.

    `prefix` (`gf_<8 chars>`) is the key's public name and its lookup key; `scopes` a list of "read", "submit",
    "admin" (each includes the ones before it).
    """

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_owner_seq", "owner", "seq"),)

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    owner: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200), default="")
    scopes: Mapped[list[Any]] = mapped_column(JSON)
    # hex SHA-256 of the whole key (the secret is 256 random bits: no slow hash needed)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # The store key that made this one through POST /v1/keys (None: made by the CLI); revoking it revokes this.
    parent_prefix: Mapped[str | None] = mapped_column(String(16))


class ServiceSecret(Base):
    """A secret the service makes once for itself, shared by every API process through the store and kept across
    restarts: `name` says what it keys ("cursor": the MAC key of paging cursors), `value` is 256 random bits as hex."""

    __tablename__ = "service_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]


class Worker(Base):
    """A live training worker process, the named queues it serves and the GPUs it sees (`gpus`: 0 on a CPU worker;
    None in a row from before migration 0010): its pool process upserts the row every
    GANFORGE_WORKER_HEARTBEAT_SECONDS; one unseen for two heartbeats is gone (the API's queue_reason reads it)."""

    __tablename__ = "workers"
    __table_args__ = (Index("ix_workers_last_seen", "last_seen"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    queues: Mapped[list[Any]] = mapped_column(JSON)
    threads: Mapped[int | None] = mapped_column(Integer)
    gpus: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime]
    last_seen: Mapped[datetime]


class WebhookEndpoint(Base):
    """A per-owner webhook endpoint (issue 13): where events of the kinds in `events` are POSTed, signed with
    `secret` as the Standard Webhooks spec says (`whsec_<base64>`, shown once at creation; kept in plain because
    every delivery is signed with it). `enabled` False stops new deliveries; `disabled_reason` says why (failing
    continuously for GANFORGE_WEBHOOK_RETRY_WINDOW_SECONDS). `failing_since`: the first failure of the current run of
    failures (None after a success)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_owner_seq", "owner", "seq"),)

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    owner: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(200), default="")
    # event kinds wanted: "job.status", "job.checkpoint", "study.finished"
    events: Mapped[list[Any]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    failing_since: Mapped[datetime | None]


class WebhookDelivery(Base):
    """The webhook outbox: one row per (event, endpoint), written in the transaction of the state change it tells.

    `status`: pending (not tried yet), failed (its last attempt failed; tried again at `next_attempt_at`),
    succeeded (a 2xx), dead (given up: the retry window passed, or its endpoint was disabled). A sender holds a
    row while it sends it by `lease_until` (another API process takes it only after that). `event_id` is the
    Standard Webhooks `webhook-id` (`msg_...`): the same on every attempt and redelivery of one event.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_seq", "endpoint_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    response_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    lease_until: Mapped[datetime | None]
    lease_holder: Mapped[str | None] = mapped_column(String(64))
