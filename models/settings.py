"""One settings object, read from GANFORGE_* environment variables.

Unset means the embedded default: a SQLite file, a Celery broker on the local
file system, and artifacts in a folder, all under the data dir. Settings that
would make the service fail open (keys that let anyone in) or run unsafely (a lease renewed too rarely) refuse validation, so a
process with them refuses to start. Production without any key is refused at API
startup, where the store's keys can be seen (api/deps.py refuse_keyless_production).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    ByteSize,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.quotas import QuotaOverride, Quotas, quotas_for

OWNER_MAX_LENGTH = 128  # the store's owner column
# The worker's metrics flush is what renews its lease: a flush this fraction of the lease timeout leaves three
# missed flushes (a slow commit, a store restart) before the reconciler takes a live job away.
FLUSH_TO_LEASE_RATIO = 4
# A rate's count and period multiplier are at most this: Redis counts in signed 64-bit integers, and a larger
# count is no limit anyway.
RATE_AMOUNT_MAX = 10**9
_RATE_NUMBERS = re.compile(r"\s*([0-9]+)\s*(?:/|per)\s*([0-9]*)", re.IGNORECASE)


def parse_api_keys(value: str) -> dict[str, str]:
    """`token=owner,token2=owner2` as {token: owner}; "" means no keys (auth off).

    Raises ValueError naming GANFORGE_API_KEYS and the entry's position (never the token) for an empty or
    whitespace-only value, an empty entry, an entry without '=', an empty token or owner, a token with
    whitespace in it, an owner longer than the store holds, and a token listed twice.
    """
    if value == "":
        return {}
    if not value.strip():
        raise ValueError("GANFORGE_API_KEYS is set but holds only whitespace: give token=owner pairs or unset it")
    keys: dict[str, str] = {}
    for position, entry in enumerate(value.split(","), start=1):
        where = f"GANFORGE_API_KEYS entry {position}"
        token, equals, owner = entry.strip().partition("=")
        token, owner = token.strip(), owner.strip()
        if not entry.strip():
            raise ValueError(f"{where} is empty (a stray comma?)")
        if not equals:
            raise ValueError(f"{where} has no '=': each entry is token=owner")
        if not token:
            raise ValueError(f"{where} has an empty token: a bare 'Authorization: Bearer' would log in as {owner!r}")
        if not owner:
            raise ValueError(f"{where} has an empty owner")
        if any(character.isspace() for character in token):
            raise ValueError(f"{where}: a token cannot contain whitespace (it could never be sent as a Bearer token)")
        if len(owner) > OWNER_MAX_LENGTH:
            raise ValueError(f"{where}: the owner is longer than {OWNER_MAX_LENGTH} characters")
        if token in keys:
            raise ValueError(f"{where} repeats an earlier entry's token: each token names one owner")
        keys[token] = owner
    return keys


def check_rate(value: str, setting: str) -> str:
    """`value` stripped when it is one rate in the `limits` notation ("120/minute", "3 per 10 seconds") of 1 or more
    requests, or "" (no limit).

    Raises ValueError naming `setting` (e.g. GANFORGE_RATE_SUBMIT) for anything else. Without the `limits` library
    (a worker-only install, which applies no rate) the text is kept unchecked.
    """
    value = value.strip()
    if not value:
        return value
    try:
        from limits import parse_many
    except ImportError:
        return value
    try:
        rates = parse_many(value)
    except ValueError:
        rates = []
    # `limits` reads a period multiplier of 0 as 1 ("1/0 seconds" is 1/second): read the numbers here.
    numbers = _RATE_NUMBERS.match(value)
    multiples = int(numbers.group(2) or 1) if numbers else 0
    if len(rates) != 1 or not 1 <= rates[0].amount <= RATE_AMOUNT_MAX or not 1 <= multiples <= RATE_AMOUNT_MAX:
        raise ValueError(
            f"{setting}={value!r} is not one rate: write a count of 1 to {RATE_AMOUNT_MAX} per period, e.g. "
            "'120/minute' or '3 per 10 seconds' (periods: second, minute, hour, day; a multiplier of 1 or more), or "
            "'' for no limit"
        )
    return value


class Settings(BaseSettings):
    # hide_input_in_errors: a refused GANFORGE_API_KEYS must not print its tokens into the log.
    model_config = SettingsConfigDict(
        env_prefix="GANFORGE_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
        hide_input_in_errors=True,
    )

    data_dir: Path = Field(default=Path("ganforge-data"), description="where the embedded default keeps everything")
    database_url: str = Field(default="", description="SQLAlchemy URL; default: SQLite file in the data dir")
    broker_url: str = Field(default="", description="Celery broker URL; default: file-system broker in the data dir")
    artifacts_url: str = Field(
        default="", description="local folder or fsspec URL (s3://bucket/prefix); default: data dir"
    )
    artifacts_options: dict[str, Any] = Field(
        default_factory=dict,
        repr=False,
        description="JSON object of the artifact file system's options (fsspec storage options), e.g. for an "
        'S3-compatible server \'{"endpoint_url": "http://minio:9000"}\'; credentials are best left to the AWS_* '
        "variables s3fs reads",
    )
    checkpoint_keep_last: int = Field(
        default=3,
        ge=0,
        le=10_000,
        description="checkpoints a job keeps when its spec leaves every.keep_last out: the newest N (the latest is "
        "always kept); 0 keeps every checkpoint",
    )
    checkpoint_keep_every: int = Field(
        default=0,
        ge=0,
        description="when a spec leaves every.keep_every out: also keep each checkpoint whose step is a multiple of N "
        "(0: none)",
    )
    api_keys: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        repr=False,
        description="comma-separated token=owner pairs, parsed once into {token: owner}; "
        "empty means no auth (every caller is 'anonymous')",
    )
    environment: Literal["development", "production"] = Field(
        default="development",
        description="'production': the API refuses to start unless GANFORGE_API_KEYS is set or the store holds an "
        "active key (checked at API startup, api/deps.py refuse_keyless_production); `ganforge up` makes the first",
    )
    queue: str = Field(
        default="ganforge",
        pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$",  # models/spec.py QUEUE_NAME: a job's resources.queue may name it
        description="the default named queue: a job whose spec leaves resources.queue out goes here, and a worker "
        "started without --queue serves it",
    )
    worker_queues: str = Field(
        default="",
        description="comma-separated named queues a training worker serves (`ganforge worker --queue` sets it); "
        "empty: the default queue",
    )
    worker_threads: int = Field(
        default=0,
        ge=0,
        description="torch intra-op threads of a training worker process (`ganforge worker --threads`); 0: its share "
        "of the machine, the CPU cores divided by the worker processes started together (`ganforge up --workers N`), "
        "else all cores",
    )
    worker_gpu: str = Field(
        default="",
        pattern=r"^([0-9]+(,[0-9]+)*)?$",
        description="the GPUs a training worker process sees (`ganforge worker --gpu I`): comma-separated indices "
        "that become its CUDA_VISIBLE_DEVICES, so a worker started for GPU i trains on it alone; empty: the "
        "CUDA_VISIBLE_DEVICES it was started with (all GPUs)",
    )
    worker_heartbeat_seconds: float = Field(
        default=10.0,
        gt=0,
        description="how often a training worker says which queues it serves; one silent for twice this is gone, "
        "and a job whose queue no live worker serves says so in queue_reason",
    )
    lease_timeout_seconds: float = Field(default=60.0, gt=0, description="a running job silent this long is re-queued")
    redeliver_seconds: float = Field(default=60.0, gt=0, description="a queued job unclaimed this long is re-sent")
    reconcile_seconds: float = Field(default=10.0, gt=0, description="how often the API's reconciler looks")
    generate_wait_seconds: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="how long POST /v1/jobs/{id}/generate waits for its result before answering 202 and a URL to poll",
    )
    generate_expire_seconds: float = Field(
        default=300.0, gt=0, description="a generate request no worker took, or finished, this long is failed"
    )
    generate_result_ttl_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="a generate result is kept this long after it is made, then its file is deleted (GET: 410)",
    )
    generate_max_active_per_owner: int = Field(
        default=8, ge=1, description="generate requests one owner may have queued or running at once (more: 429)"
    )
    generate_max_results_per_owner: int = Field(
        default=16,
        ge=1,
        description="generate results kept per owner; a newer one deletes the oldest beyond this (GET: 410)",
    )
    metrics_flush_seconds: float = Field(
        default=1.0,
        gt=0,
        description="how often a worker writes its metrics and progress, which renews its job's lease; "
        f"at most lease_timeout_seconds / {FLUSH_TO_LEASE_RATIO}",
    )
    max_sse_per_owner: int = Field(
        default=16,
        ge=1,
        description="event streams (GET /v1/jobs/{id}/events) one owner may hold open on one API process; "
        "one more is a 429 with Retry-After",
    )
    max_uploads_in_flight_per_owner: int = Field(
        default=2,
        ge=1,
        description="data set uploads one owner may have in progress at once on one API process; one more is a "
        "429 with Retry-After before its body is read",
    )
    max_json_body_bytes: int = Field(
        default=1024**2, gt=0, description="largest JSON request body; a larger one is a 413 before it is read"
    )
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0, description="largest dataset upload accepted")
    max_archive_bytes: int = Field(
        default=8 * 1024**3, gt=0, description="largest total uncompressed size of an uploaded .zip/.npz's members"
    )
    max_archive_files: int = Field(default=500_000, gt=0, description="most entries an uploaded archive may hold")
    max_dataset_bytes: int = Field(
        default=16 * 1024**3, gt=0, description="largest normalised data set (float32) an upload may become"
    )
    max_classes: int = Field(default=1000, gt=0, description="most distinct labels a data set may have")
    max_compression_ratio: float = Field(
        default=200.0, gt=1, description="most an archive entry over 1 MiB may unpack to, per compressed byte"
    )
    ingest_memory_bytes: int = Field(
        default=2 * 1024**3, gt=0, description="address-space limit of the subprocess that normalises an upload"
    )
    ingest_timeout_seconds: float = Field(default=3600.0, gt=0, description="wall-clock limit of that subprocess")
    # Rates in the `limits` notation, counted in a moving window (api/ratelimit.py); "" turns one off.
    rate_submit: str = Field(
        default="120/minute",
        description="submissions per key (a store key's prefix, an environment key's owner; the client IP with auth "
        "off), and per owner (all its keys together): POST /v1/jobs, /v1/studies, /v1/jobs/{id}/generate and "
        "/v1/keys together; more is a 429 with Retry-After",
    )
    rate_upload: str = Field(
        default="20/minute", description="data-set uploads (POST /v1/datasets) per key and per owner, as rate_submit"
    )
    max_keys_per_owner: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="active (neither revoked nor expired) store keys one owner may hold; POST /v1/keys past it is "
        "a 403 quota_exceeded",
    )
    rate_unauthenticated: str = Field(
        default="60/minute",
        description="requests per client IP that fail authentication (401); past it every request of that IP "
        "that needs a key lookup in the store is a 429 until the window frees",
    )
    worker_memory_bytes: ByteSize = Field(
        default=ByteSize(8 * 1024**3),
        gt=0,
        description="memory a training worker has for one job's tensors (its GPU's, or its host's on a CPU worker): "
        "a spec whose estimate (models/memory.py: parameters, gradients, optimiser state, EMA, data, activations, "
        "x 1.5) is larger is refused at submission with a 422. Bytes, or a size such as 16GiB or 80GB",
    )
    worker_address_space_bytes: ByteSize = Field(
        default=ByteSize(0),
        ge=0,
        description="address-space limit (RLIMIT_AS) a training worker's pool process sets on itself before a job: "
        "an allocation past it raises MemoryError, which ends the job failed 'out of memory' rather than the "
        "kernel's OOM killer ending the process (which re-queues the job); 0: no limit. It counts virtual memory "
        "(libraries, thread stacks), so leave a few GiB above worker_memory_bytes; CPU workers only (CUDA reserves far "
        "more address space than it uses)",
    )
    inception_weights: Path | None = Field(
        default=None,
        description="pytorch-fid's pt_inception-2015-12-05-6726825d.pth on the worker's disk: image jobs then "
        "also report fid and kid (never downloaded); unset: no FID",
    )
    # Observability (issue 13; models/logs.py, worker/telemetry.py).
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="'json': every server process logs one JSON object per line (time, level, logger, process, "
        "message; job_id, attempt and worker on a line about a job); 'text': one readable line",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="a training worker serves its Prometheus metrics (steps/s, step and checkpoint times, store "
        "writes, GPU memory, its job) at http://HOST:PORT/metrics (`ganforge worker --metrics-port`); unset: off",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="the address the worker's metrics port listens on: 0.0.0.0 for a Prometheus on another machine",
    )

    @field_validator("worker_metrics_port", mode="before")
    @classmethod
    def _port_unset_when_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    # MLflow mirroring (issue 13; worker/mlflow_mirror.py sends, models/tracking.py decides where).
    mlflow_tracking_uri: str = Field(
        default="",
        description="an MLflow tracking server (e.g. http://mlflow.internal:5000) every job is mirrored to: params, "
        "metrics, samples, the final checkpoint, status; empty: only jobs whose spec names an allowed server are",
    )
    mlflow_allowed_uris: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated tracking URIs a job's spec may name in mlflow.tracking_uri besides "
        "GANFORGE_MLFLOW_TRACKING_URI (the worker calls them); empty: none",
    )
    mlflow_experiment: str = Field(
        default="ganforge", min_length=1, max_length=500, description="the experiment of a job that names none"
    )
    mlflow_buffer_points: int = Field(
        default=100_000,
        ge=100,
        description="metric points (and sample pictures) a worker holds for a tracking server that is away; past "
        "it the oldest are dropped and counted in the job's events",
    )
    mlflow_timeout_seconds: int = Field(
        default=10, ge=1, le=600, description="how long one request to the tracking server may take"
    )
    mlflow_drain_seconds: float = Field(
        default=60.0,
        ge=0,
        description="after a job ends, how long its worker waits for the rest (the final checkpoint, the status) "
        "to reach a tracking server that answers; one that is away is given up at once",
    )

    @field_validator("mlflow_allowed_uris", mode="before")
    @classmethod
    def _split_uris(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    # Webhooks (issue 13; api/webhooks.py sends them, models/webhooks.py guards their URLs).
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated host names or CIDRs (a bare address is one host) a webhook URL may reach "
        "although it is loopback, private, link-local, multicast, reserved or unspecified, e.g. '127.0.0.1' or "
        "'10.0.0.0/8,hooks.internal'; empty: only public addresses",
    )
    webhook_max_endpoints_per_owner: int = Field(
        default=20, ge=1, le=10_000, description="webhook endpoints one owner may hold; one more is a 403"
    )
    webhook_retry_window_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="a webhook delivery is retried this long after its event (then dead), and an endpoint whose "
        "deliveries failed without a success this long is disabled",
    )
    webhook_retry_base_seconds: float = Field(
        default=5.0, gt=0, description="the first retry's delay; each next one doubles it (jittered ±20%)"
    )
    webhook_retry_max_seconds: float = Field(
        default=3600.0, gt=0, description="the longest delay between two attempts of one delivery"
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="how long one webhook POST may take (connect, send, wait for the answer)"
    )
    webhook_poll_seconds: float = Field(
        default=0.25,
        gt=0,
        le=5,
        description="how often the API's webhook sender looks for deliveries other processes (workers) wrote; the "
        "API's own writes wake it at once",
    )

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _hosts_or_networks(cls, value: list[str]) -> list[str]:
        from models.webhooks import check_allowed_host

        for entry in value:
            check_allowed_host(entry)
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("inception_weights", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_api_keys(value)
        if isinstance(value, Mapping):
            # a mapping given in code gets the same checks as the environment's string
            return parse_api_keys(",".join(f"{token}={owner}" for token, owner in value.items())) if value else {}
        return value

    @field_validator("rate_submit", "rate_upload", "rate_unauthenticated")
    @classmethod
    def _one_rate(cls, value: str, info: ValidationInfo) -> str:
        return check_rate(value, f"GANFORGE_{(info.field_name or '').upper()}")

    quota: Quotas = Field(
        default_factory=Quotas,
        description="per-owner quota defaults (models/quotas.py), set field by field: GANFORGE_QUOTA_RUNNING_JOBS=4",
    )
    owner_quotas: dict[str, QuotaOverride] = Field(
        default_factory=dict,
        description="JSON {owner: {field: value}} replacing quota fields for one owner, e.g. "
        '{"vision": {"running_jobs": 16}}',
    )
    sse_listen: bool = Field(
        default=True,
        description="on PostgreSQL, each API process LISTENs for event-log appends and wakes its SSE feeds at once "
        "(a feed then reads only when told, and every 5 s); false: each followed job is polled every 0.2 s per API "
        "process, as on SQLite",
    )

    @field_validator("quota", "owner_quotas", mode="wrap")
    @classmethod
    def _name_quota_setting(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        # pydantic's location (owner_quotas.vision.stored_bytes) is not the variable an operator sets: name it.
        try:
            return handler(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = [str(part) for part in error["loc"]]
            if info.field_name == "quota":
                setting = f"GANFORGE_QUOTA_{where[0].upper()}" if where else "GANFORGE_QUOTA_*"
            else:
                setting = f"GANFORGE_OWNER_QUOTAS at {'.'.join(where)}" if where else "GANFORGE_OWNER_QUOTAS"
            raise ValueError(f"{setting}: {error['msg'].removeprefix('Value error, ')}") from None

    def quotas(self, owner: str) -> Quotas:
        """`owner`'s quotas: the GANFORGE_QUOTA_* defaults with its override from GANFORGE_OWNER_QUOTAS."""
        return quotas_for(self.quota, self.owner_quotas, owner)

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'ganforge.db'}"
        if not self.broker_url:
            self.broker_url = "filesystem://localhost/"  # without a host kombu warns "No hostname was supplied"
        if not self.artifacts_url:
            self.artifacts_url = str(self.data_dir / "artifacts")
        return self

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.metrics_flush_seconds > self.lease_timeout_seconds / FLUSH_TO_LEASE_RATIO:
            raise ValueError(
                f"GANFORGE_METRICS_FLUSH_SECONDS ({self.metrics_flush_seconds:g}) must be at most "
                f"GANFORGE_LEASE_TIMEOUT_SECONDS / {FLUSH_TO_LEASE_RATIO} "
                f"({self.lease_timeout_seconds / FLUSH_TO_LEASE_RATIO:g}): the flush renews the job's lease, "
                "so a slower one lets the reconciler re-queue a job that is still training"
            )
        return self

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (read once); raises pydantic.ValidationError for settings that refuse to start."""
    return Settings()
