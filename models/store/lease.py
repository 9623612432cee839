"""The lease protocol: a worker claims a job, renews its lease, writes progress, and ends or hands the job back.

Two numbers, kept apart:
- `lease_token`, the fencing token: every claim increments it, and every call of a
  worker names the token its claim returned, so a worker that lost its lease (the
  reconciler re-queued the job, another worker claimed it) can write nothing.
- `attempt`, shown to users: the attempt running or next to run, 1-based. Only an
  attempt that failed (the worker crashed or went silent past the lease timeout)
  advances it; a hand-back (SIGTERM, deploy, store outage) does not. `max_attempts`
  bounds the failed attempts, so attempt never exceeds it.

The reconciler's queries (silent leases, unclaimed jobs) live here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from models.records import Checkpoint, Job, JobStatus
from models.store.base import StoreBase, append_event, transition, utcnow
from models.store.results import MetricPoint, write_metrics


def _held(job_id: str, worker: str, token: int) -> ColumnElement[bool]:
    """The job row while `worker` holds the lease with `token`."""
    return and_(
        Job.id == job_id,
        Job.worker == worker,
        Job.lease_token == token,
        Job.status.in_((JobStatus.RUNNING, JobStatus.CANCELLING)),
    )


def _locked_lease(session: Session, job_id: str, worker: str, token: int) -> Job | None:
    return session.scalar(select(Job).where(_held(job_id, worker, token)).with_for_update())


class LeaseStore(StoreBase):
    """The worker's side of a job, and the reconciler's."""

    def claim(self, *, job_id: str, worker: str) -> Job | None:
        """Take a queued job with a conditional UPDATE; None when someone else has it or it is not queued.

        The returned job carries `.lease_token` (pass it as `token=` to every later
        lease call) and `.attempt` (the attempt this run is; a claim does not change it).
        """
        now = utcnow()
        with self.session() as session, session.begin():
            claimed = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                .values(
                    status=JobStatus.RUNNING,
                    lease_token=Job.lease_token + 1,
                    worker=worker,
                    heartbeat_at=now,
                    updated_at=now,
                    started_at=func.coalesce(Job.started_at, now),
                )
                .returning(Job.attempt)
            ).scalar_one_or_none()
            if claimed is None:
                return None
            append_event(
                session,
                job_id,
                "status",
                {
                    "from": JobStatus.QUEUED,
                    "to": JobStatus.RUNNING,
                    "reason": f"claimed by {worker}",
                    "attempt": claimed,
                },
            )
            return session.scalars(select(Job).where(Job.id == job_id)).one()

    def heartbeat(self, *, job_id: str, worker: str, token: int) -> str | None:
        """Renew the lease; the job's status, or None when this worker no longer holds it."""
        with self.session() as session, session.begin():
            return session.execute(
                update(Job).where(_held(job_id, worker, token)).values(heartbeat_at=utcnow()).returning(Job.status)
            ).scalar_one_or_none()

    def record_progress(
        self,
        *,
        job_id: str,
        worker: str,
        token: int,
        step: int,
        steps_per_sec: float | None,
        points: Sequence[MetricPoint],
    ) -> str | None:
        """Write a batch of metric points (upsert by job, name, step) and the job's progress in one commit.

        Any number of points is written (in statements sized under the database's
        parameter limit, one transaction). The progress step never falls behind the
        job's latest checkpoint, which holds at least that many finished steps. Renews
        the lease. Returns the job's status, or None when this worker no longer holds the job.
        """
        now = utcnow()
        with self.session() as session, session.begin():
            job = _locked_lease(session, job_id, worker, token)
            if job is None:
                return None
            latest = write_metrics(session, job_id, points)
            checkpointed = session.scalar(select(func.max(Checkpoint.step)).where(Checkpoint.job_id == job_id))
            job.step = max(step, checkpointed or 0)
            job.steps_per_sec = steps_per_sec
            job.latest_metrics = {**job.latest_metrics, **latest}
            job.heartbeat_at = now
            job.updated_at = now
            return job.status

    def finish(
        self, *, job_id: str, worker: str, token: int, status: str, reason: str, error: str | None = None
    ) -> bool:
        """Move a job this worker holds to a final status (succeeded, failed, cancelled); False when it lost the lease.

        Raises ValueError for a status that is not final: a job goes back to the queue through hand_back.
        """
        if status not in JobStatus.FINAL:
            raise ValueError(f"finish takes a final status {JobStatus.FINAL}, not {status!r}; use hand_back")
        with self.session() as session, session.begin():
            job = _locked_lease(session, job_id, worker, token)
            if job is None:
                return False
            transition(session, job, status, reason)
            job.error = error
            job.finished_at = utcnow()
            return True

    def hand_back(self, *, job_id: str, worker: str, token: int, reason: str) -> bool:
        """Give a job this worker holds back to the queue without using up an attempt (shutdown, deploy, outage).

        The job's status event says it was handed back, with `reason`. A job the user
        was cancelling is cancelled instead. The caller sends the broker message (the
        reconciler re-sends it if that fails). False when this worker no longer holds the job.
        """
        with self.session() as session, session.begin():
            job = _locked_lease(session, job_id, worker, token)
            if job is None:
                return False
            job.worker = None
            if job.status == JobStatus.CANCELLING:
                transition(session, job, JobStatus.CANCELLED, f"handed back by {worker} while cancelling: {reason}")
                job.finished_at = utcnow()
                return True
            transition(session, job, JobStatus.QUEUED, f"handed back by {worker}: {reason}", handed_back=True)
            job.enqueued_at = utcnow()
            return True

    def forgive_attempt(self, *, job_id: str, worker: str, token: int, reason: str) -> bool:
        """Give back the attempt a lease expiry consumed when the predecessor was in fact handing the job back.

        A worker that resumed from a checkpoint its predecessor wrote while handing
        back during a store outage calls this: the predecessor could not reach the
        store, so its lease expired and counted as a failed attempt. Logs an
        `attempt` event with `reason`. At most one attempt per lease, never below 1.
        Returns True when an attempt was given back; False when this worker no
        longer holds the job, or there is nothing to give back.
        """
        with self.session() as session, session.begin():
            job = _locked_lease(session, job_id, worker, token)
            if job is None or job.attempt <= 1 or job.forgiven_token == token:
                return False
            forgiven = job.attempt - 1
            job.attempt, job.forgiven_token = forgiven, token
            job.updated_at = utcnow()
            append_event(
                session,
                job_id,
                "attempt",
                {"attempt": forgiven, "reason": f"attempt {forgiven + 1} given back by {worker}: {reason}"},
            )
            return True

    # ------------------------------------------------------------------ reconciler

    def requeue_silent_jobs(self, *, lease_timeout: timedelta) -> list[str]:
        """Jobs whose worker stopped renewing its lease: a failed attempt each.

        A running job goes back to the queue with attempt + 1, or fails once it has
        used max_attempts; a cancelling one is cancelled. Returns the ids to send to
        the broker again.
        """
        cutoff = utcnow() - lease_timeout
        to_send = []
        with self.session() as session, session.begin():
            stale = session.scalars(
                select(Job)
                .where(Job.status.in_((JobStatus.RUNNING, JobStatus.CANCELLING)), Job.heartbeat_at < cutoff)
                .with_for_update()
            ).all()
            for job in stale:
                silent = f"worker {job.worker} silent for over {lease_timeout.total_seconds():.0f} s"
                job.worker = None
                if job.status == JobStatus.CANCELLING:
                    transition(session, job, JobStatus.CANCELLED, f"{silent} while cancelling")
                    job.finished_at = utcnow()
                elif job.attempt >= job.max_attempts:
                    job.error = f"{silent}; gave up after {job.attempt} attempts"
                    transition(session, job, JobStatus.FAILED, job.error)
                    job.finished_at = utcnow()
                else:
                    failed = job.attempt
                    job.attempt = failed + 1
                    transition(
                        session,
                        job,
                        JobStatus.QUEUED,
                        f"{silent}: attempt {failed} of {job.max_attempts} failed; "
                        "re-queued to resume from its latest checkpoint",
                    )
                    job.enqueued_at = utcnow()
                    to_send.append(job.id)
        return to_send

    def unclaimed_jobs(self, *, older_than: timedelta) -> list[str]:
        """Queued jobs whose broker message may have been lost; marks them as sent again."""
        cutoff = utcnow() - older_than
        with self.session() as session, session.begin():
            ids = list(
                session.scalars(
                    select(Job.id).where(
                        Job.status == JobStatus.QUEUED, or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff)
                    )
                )
            )
            if ids:
                session.execute(update(Job).where(Job.id.in_(ids)).values(enqueued_at=utcnow()))
        return ids
