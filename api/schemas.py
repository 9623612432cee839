"""Response bodies. The request body of `POST /v1/jobs` is models.spec.JobSpec itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from models.records import Checkpoint, Job, Sample
from models.store import as_utc


class Progress(BaseModel):
    step: int
    total_steps: int
    steps_per_sec: float | None
    eta_seconds: float | None


class JobOut(BaseModel):
    id: str
    name: str
    status: str
    owner: str
    spec: dict[str, Any]
    tags: dict[str, Any]
    progress: Progress
    latest_metrics: dict[str, float]
    attempt: int = Field(
        description="the attempt running or next to run, from 1; only attempts that failed (the worker crashed "
        "or went silent past its lease) count, a hand-back (shutdown, deploy) does not; never above max_attempts"
    )
    max_attempts: int = Field(description="how many failed attempts the job may use before it fails")
    error: str | None
    study_id: str | None = Field(default=None, description="the study that fanned this job out, if any")
    priority: int = Field(description="0-100, higher first among the owner's waiting jobs (the spec's `priority`)")
    queue_reason: str | None = Field(
        default=None,
        description="why a queued job still waits, computed when read (GET /v1/jobs/{id} and POST /v1/jobs; null in lists and "
        "once it runs): 'waiting: owner has 8 of 8 running jobs (quota running_jobs)' or 'waiting for a free "
        "worker (3 jobs ahead)', an estimate by fair share",
    )
    alerts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="what training.watch found, oldest first: {kind: collapse|divergence, step, evidence, action}",
    )
    cpu_seconds: float | None = Field(default=None, description="process CPU seconds spent training, all attempts")
    gpu_seconds: float | None = Field(default=None, description="wall seconds trained on a GPU, all attempts")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job, queue_reason: str | None = None) -> JobOut:
        rate = job.steps_per_sec
        eta = (job.total_steps - job.step) / rate if rate and job.status == "running" else None
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            owner=job.owner,
            spec=job.spec,
            tags=job.tags,
            progress=Progress(step=job.step, total_steps=job.total_steps, steps_per_sec=rate, eta_seconds=eta),
            latest_metrics=job.latest_metrics,
            attempt=min(job.attempt, job.max_attempts),
            max_attempts=job.max_attempts,
            error=job.error,
            study_id=job.study_id,
            priority=job.priority,
            queue_reason=queue_reason,
            alerts=job.alerts or [],
            cpu_seconds=job.cpu_seconds,
            gpu_seconds=job.gpu_seconds,
            created_at=as_utc(job.created_at),
            updated_at=as_utc(job.updated_at),
            started_at=as_utc(job.started_at),
            finished_at=as_utc(job.finished_at),
        )


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None


class ValidatedSpec(BaseModel):
    valid: bool
    spec: dict[str, Any]


class Series(BaseModel):
    steps: list[int]
    values: list[float]
    downsampled: bool


class MetricsOut(BaseModel):
    job_id: str
    series: dict[str, Series]


def sample_urls(job_id: str, step: int) -> dict[str, str]:
    """{"png_url", "npy_url"}: where the snapshot at `step` downloads (GET .../samples/{step}.png|.npy)."""
    base = f"/v1/jobs/{job_id}/samples/{step}"
    return {"png_url": f"{base}.png", "npy_url": f"{base}.npy"}


def checkpoint_urls(job_id: str, step: int) -> dict[str, str]:
    """{"url", "state_url"}: where the checkpoint at `step` downloads (weights; ?file=state the resume state)."""
    url = f"/v1/jobs/{job_id}/checkpoints/{step}"
    return {"url": url, "state_url": f"{url}?file=state"}


class SampleOut(BaseModel):
    step: int
    count: int
    png_url: str
    npy_url: str
    labels: list[int] | None
    evaluation: dict[str, float] | None
    created_at: datetime

    @classmethod
    def of(cls, sample: Sample) -> SampleOut:
        return cls(
            step=sample.step,
            count=sample.count,
            **sample_urls(sample.job_id, sample.step),
            labels=(sample.labels or {}).get("labels"),
            evaluation=sample.evaluation,
            created_at=as_utc(sample.created_at),
        )


class CheckpointOut(BaseModel):
    step: int
    size_bytes: int = Field(description="size of the weights file (safetensors) that `url` downloads, in bytes")
    url: str
    state_url: str
    created_at: datetime

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> CheckpointOut:
        return cls(
            step=checkpoint.step,
            size_bytes=checkpoint.size_bytes,
            **checkpoint_urls(checkpoint.job_id, checkpoint.step),
            created_at=as_utc(checkpoint.created_at),
        )
