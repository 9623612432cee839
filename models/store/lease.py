"""The lease protocol: a worker claims a job, renews its lease, writes progress, and ends or hands the job back.

Two numbers, kept apart:
- `lease_token`, the fencing token: every claim increments it, and every call of a
  worker names the token its claim returned, so a worker that lost its lease (the
  reconciler re-queued the job, another worker claimed it) can write nothing.
- `attempt`, shown to users: the attempt running or next to run, 1-based. Only an
  attempt that failed (the worker crashed or went silent past the lease timeout)
  advances it; a hand-back (SIGTERM, deploy, store outage) does not. `max_attempts`
  bounds the failed attempts, so attempt never exceeds it.

The scheduler (claim_next: fair share between owners, priorities, the running-jobs quota) and the
reconciler's queries (silent leases, wake-ups) live here too.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    JSON,
    BigInteger,
    BindParameter,
    ColumnElement,
    DateTime,
    Float,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from models.quotas import Quotas
from models.records import Checkpoint, Job, JobStatus
from models.store.base import StoreBase, append_event, as_utc, transition, utcnow
from models.store.results import MetricPoint, write_metrics
from models.store.workers import gpu_shortage


def _held(
    job_id: str | BindParameter[str], worker: str | BindParameter[str], token: int | BindParameter[int]
) -> ColumnElement[bool]:
    """The job row while `worker` holds the lease with `token` (values, or bind parameters of a statement built
    once)."""
    return and_(
        Job.id == job_id,
        Job.worker == worker,
        Job.lease_token == token,
        Job.status.in_((JobStatus.RUNNING, JobStatus.CANCELLING)),
    )


def _locked_lease(session: Session, job_id: str, worker: str, token: int) -> Job | None:
    return session.scalar(select(Job).where(_held(job_id, worker, token)).with_for_update())


# record_progress's statements (Core, on the columns it needs, built once): it runs every flush of every running
# job, and building statements and the ORM's load and unit of work were most of its CPU (bench/ingest.py's fleet).
_LOCK_LEASE = (
    select(
        Job.latest_metrics,
        select(func.max(Checkpoint.step)).where(Checkpoint.job_id == bindparam("job_id")).scalar_subquery(),
    )
    .where(_held(bindparam("job_id"), bindparam("worker"), bindparam("token", type_=BigInteger)))
    .with_for_update(of=Job)
)
_SET_PROGRESS = (
    update(Job)
    .where(Job.id == bindparam("job_id"))
    .values(
        step=bindparam("new_step", type_=BigInteger),
        steps_per_sec=bindparam("new_rate", type_=Float),
        latest_metrics=bindparam("new_latest", type_=JSON),
        heartbeat_at=bindparam("now", type_=DateTime(timezone=True)),
        updated_at=bindparam("now", type_=DateTime(timezone=True)),
    )
    .returning(Job.status)
)


# The running-jobs quota of an owner: a function of the owner's name (Settings.quotas in the service).
QuotasOf = Callable[[str], Quotas]
# The first key of the scheduler's PostgreSQL advisory locks (the second is hashtext(owner)): its own lock space.
_OWNER_LOCKS = 0x67660001
_RUNS = (JobStatus.RUNNING, JobStatus.CANCELLING)


def _in_queues(queues: Collection[str] | None) -> ColumnElement[bool]:
    """Jobs of the named `queues` (None: every queue)."""
    return Job.queue.in_(list(queues)) if queues is not None else true()


def _runs_on(seen: int | None) -> ColumnElement[bool]:
    """Jobs a worker that sees `seen` GPUs runs rather than fails: workers.runs_on over the stored spec's
    training.device and resources.gpus (a spec from before resources.gpus asks for 1); None: every job."""
    if seen is None:
        return true()
    device = func.coalesce(Job.spec[("training", "device")].as_string(), "auto")
    if seen == 0:  # "cpu" and "auto" run as gloo processes on the CPU; "cuda" cannot
        return device != "cuda"
    return or_(device == "cpu", func.coalesce(Job.spec[("resources", "gpus")].as_integer(), 1) <= seen)


def _running_of_waiting_owners(session: Session, queues: Collection[str] | None = None) -> dict[str, int]:
    """{owner: running + cancelling jobs, in any queue} for every owner with a queued job in `queues` (None: any);
    0 when none runs."""
    waiting = select(Job.owner).where(Job.status == JobStatus.QUEUED, _in_queues(queues)).distinct()
    counts = dict(
        session.execute(
            select(Job.owner, func.count()).where(Job.status.in_(_RUNS), Job.owner.in_(waiting)).group_by(Job.owner)
        ).all()
    )
    return {owner: counts.get(owner, 0) for owner in session.scalars(waiting)}


def _served_order(session: Session, owners: set[str]) -> dict[str, int]:
    """{owner: rank} by when the owner's latest job first started, never-started owners first (rank 0)."""
    started = dict(
        session.execute(
            select(Job.owner, func.max(Job.started_at)).where(Job.owner.in_(owners)).group_by(Job.owner)
        ).all()
    )
    never = datetime.min.replace(tzinfo=UTC)
    ranked = sorted(owners, key=lambda owner: (as_utc(started.get(owner)) or never, owner))
    return {owner: rank for rank, owner in enumerate(ranked)}


def _running_count(session: Session, owner: str) -> int:
    return session.scalar(select(func.count()).where(Job.owner == owner, Job.status.in_(_RUNS))) or 0


def _take(session: Session, job_id: str, worker: str, now: datetime) -> Job | None:
    """Move a queued job to running for `worker` (conditional UPDATE, new lease token, status event)."""
    attempt = session.execute(
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
    if attempt is None:
        return None
    append_event(
        session,
        job_id,
        "status",
        {"from": JobStatus.QUEUED, "to": JobStatus.RUNNING, "reason": f"claimed by {worker}", "attempt": attempt},
    )
    return session.scalars(select(Job).where(Job.id == job_id)).one()


class LeaseStore(StoreBase):
    """The worker's side of a job, and the reconciler's."""

    def claim_next(
        self, *, worker: str, quotas_of: QuotasOf, queues: Collection[str] | None = None, gpus: int | None = None
    ) -> Job | None:
        """Claim the next queued job of the named `queues` (the worker's; None: every queue) by fair share; None
        when no queued job of them may start now. An owner's running-jobs quota counts its jobs in every queue.
        `gpus`: how many GPUs the claiming worker sees; a job it could not run (workers.runs_on: a cuda job on a
        CPU worker, resources.gpus above `gpus`) is left queued for a worker that can (None: any job).

        Among owners whose running jobs (running + cancelling) are below their `running_jobs` quota
        (`quotas_of(owner)`, models/quotas.py), jobs are taken by the owner's running count ascending, then
        `priority` descending, then the owner served longest ago (its latest job's first start; never-served
        owners first), then submission order: one owner's 1,000 queued jobs do not hold back another owner's
        one, even with a single worker. The job moves to running with a conditional UPDATE and a `claimed by` status event.
        On PostgreSQL the row is taken FOR UPDATE SKIP LOCKED and the owner's quota is re-counted under a
        transaction-scoped advisory lock on the owner, so concurrent claims neither take one row twice nor
        start more of an owner's jobs than its quota; SQLite serialises writers (BEGIN IMMEDIATE).

        The returned job carries `.lease_token` (pass it as `token=` to every later lease call) and `.attempt`
        (the attempt this run is; a claim does not change it).
        """
        now = utcnow()
        with self.session() as session, session.begin():
            postgres, locked = session.get_bind().dialect.name == "postgresql", False
            levels: dict[int, set[str]] = {}
            for owner, running in _running_of_waiting_owners(session, queues).items():
                if running < quotas_of(owner).running_jobs:
                    levels.setdefault(running, set()).add(owner)
            for level in sorted(levels):
                owners = levels[level]
                # Among owners running as many jobs, equal priorities go to the owner served longest ago: with
                # one slot, A's 1,000 jobs and B's one take turns instead of B waiting behind all of A's.
                served = _served_order(session, owners)
                while owners:
                    pick = (
                        select(Job.id, Job.owner)
                        .where(
                            Job.status == JobStatus.QUEUED, _in_queues(queues), _runs_on(gpus), Job.owner.in_(owners)
                        )
                        .order_by(Job.priority.desc(), case(served, value=Job.owner), Job.seq)
                        .limit(1)
                    )
                    if postgres:
                        pick = pick.with_for_update(skip_locked=True)
                    row = session.execute(pick).first()
                    if row is None:
                        break
                    job_id, owner = row
                    if postgres:
                        # Wait for the first owner's lock only: holding one and waiting for another could deadlock
                        # with a claim that took them the other way round; a busy second owner is passed over.
                        key = (_OWNER_LOCKS, func.hashtext(owner))
                        if not locked:
                            session.execute(select(func.pg_advisory_xact_lock(*key)))
                        elif not session.scalar(select(func.pg_try_advisory_xact_lock(*key))):
                            owners.discard(owner)
                            continue
                        locked = True
                        # A claim committed since the counts above is seen by this statement (READ COMMITTED).
                        if _running_count(session, owner) >= quotas_of(owner).running_jobs:
                            owners.discard(owner)
                            continue
                    return _take(session, job_id, worker, now)
        return None

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
        with self.session() as session, session.begin():
            held = session.connection().execute(_LOCK_LEASE, {"job_id": job_id, "worker": worker, "token": token})
            row = held.one_or_none()
            if row is None:
                return None
            latest_metrics, checkpoint_step = row
            latest = write_metrics(session, job_id, points)
            now = utcnow()
            progress = {
                "job_id": job_id,
                "new_step": max(step, checkpoint_step or 0),
                "new_rate": steps_per_sec,
                "new_latest": {**latest_metrics, **latest},
                "now": now,
            }
            return session.connection().execute(_SET_PROGRESS, progress).scalar_one()

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

    def wake_ups(
        self, *, older_than: timedelta, quotas_of: QuotasOf, limit: int, queues: Collection[str] | None = None
    ) -> list[str]:
        """The wake-ups the reconciler sends: at most `limit`, and only for queued jobs that may start now.

        A queued job may start when its owner runs fewer jobs than its `running_jobs` quota; one that has
        waited past `older_than` since its last message (or never had one) may have lost it. Returns the ids of
        such jobs in claim order, at most `limit` and at most each owner's free slots, to send as wake-up hints
        (a worker claims by fair share whichever job is next). Every such waiting job is marked as sent, so the
        next wake-ups come `older_than` later at the earliest. Jobs held back by their owner's quota get none:
        the end of one of the owner's jobs wakes the queue (worker/tasks.py). With `queues` (the reconciler passes
        the queues live workers serve), only jobs of those queues: a wake-up for a queue nobody consumes would
        pile up in the broker. Send each to its job's queue (queues_of).
        """
        now = utcnow()
        with self.session() as session, session.begin():
            room = {
                owner: quotas_of(owner).running_jobs - running
                for owner, running in _running_of_waiting_owners(session, queues).items()
            }
            free = [owner for owner, slots in room.items() if slots > 0]
            if not free:
                return []
            waited = and_(
                Job.status == JobStatus.QUEUED,
                _in_queues(queues),
                Job.owner.in_(free),
                or_(Job.enqueued_at.is_(None), Job.enqueued_at < now - older_than),
            )
            ids: list[str] = []
            for job_id, owner in session.execute(
                select(Job.id, Job.owner).where(waited).order_by(Job.priority.desc(), Job.seq)
            ).all():
                if room[owner] > 0:
                    ids.append(job_id)
                    room[owner] -= 1
                    if len(ids) == limit:
                        break
            if ids:
                session.execute(update(Job).where(waited).values(enqueued_at=now))
        return ids

    def next_queued(self) -> str | None:
        """The id of the queued job first in priority order (a wake-up's hint), or None when none is queued."""
        with self.session() as session:
            return session.scalar(
                select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.priority.desc(), Job.seq).limit(1)
            )

    def queues_of(self, *, job_ids: Collection[str]) -> dict[str, str]:
        """{job id: its named queue} for the jobs that exist among `job_ids` (where to send their wake-ups)."""
        if not job_ids:
            return {}
        with self.session() as session:
            rows = session.execute(select(Job.id, Job.queue).where(Job.id.in_(list(job_ids)))).all()
            return {job_id: queue for job_id, queue in rows}

    def queue_reason(
        self,
        *,
        job: Job,
        quotas_of: QuotasOf,
        served: Collection[str] | None = None,
        gpus_seen: Mapping[str, Collection[int | None]] | None = None,
    ) -> str | None:
        """Why a queued job waits, computed now: its owner's running-jobs quota, no live worker serving its queue
        (when `served`, the queues live workers serve, is given: WorkersStore.served_queues), no live worker of its
        queue that can run it (when `gpus_seen`, {queue: the GPU counts its live workers see}, is given:
        WorkersStore.gpus_by_queue; the rule is workers.runs_on), or a free worker. Only the owner's own jobs are
        counted: how many other owners' jobs wait is theirs to know. None unless `job` is queued.

        E.g. "waiting: owner has 8 of 8 running jobs (quota running_jobs)", "waiting for a free worker: no worker
        serves queue 'gpu' (start one with `ganforge worker --queue gpu`)", "no live worker of queue 'gpu' sees 4
        GPUs (the most is 1): ...", "waiting for a free worker (2 of this owner's jobs ahead)", "waiting for a free
        worker".
        """
        if job.status != JobStatus.QUEUED:
            return None
        with self.session() as session:
            own = session.scalar(select(func.count()).where(Job.status.in_(_RUNS), Job.owner == job.owner)) or 0
            quota = quotas_of(job.owner).running_jobs
            # The claim order within an owner: priority descending, then submission order.
            before = or_(Job.priority > job.priority, and_(Job.priority == job.priority, Job.seq < job.seq))
            queued = Job.status == JobStatus.QUEUED
            mine = session.scalar(select(func.count()).where(queued, Job.owner == job.owner, before)) or 0
            if own >= quota:
                return f"waiting: owner has {own} of {quota} running jobs (quota running_jobs)"
            if own + mine >= quota:
                return (
                    f"waiting: owner has {own} of {quota} running jobs and {mine} queued ahead of this one "
                    "(quota running_jobs)"
                )
            if served is not None and job.queue not in served:
                return (
                    f"waiting for a free worker: no worker serves queue '{job.queue}' "
                    f"(start one with `ganforge worker --queue {job.queue}`)"
                )
            if gpus_seen is not None and (short := _gpu_shortage(job, gpus_seen)) is not None:
                return short
            if mine == 0:
                return "waiting for a free worker"
            return f"waiting for a free worker ({mine} of this owner's {'job' if mine == 1 else 'jobs'} ahead)"


def _gpu_shortage(job: Job, gpus_seen: Mapping[str, Collection[int | None]]) -> str | None:
    """workers.gpu_shortage for `job`'s queue, device and resources.gpus (the stored spec has its defaults filled;
    a spec stored before they existed is a one-process job on "auto")."""
    training, resources = job.spec.get("training") or {}, job.spec.get("resources") or {}
    return gpu_shortage(
        queue=job.queue,
        device=str(training.get("device") or "auto"),
        gpus=int(resources.get("gpus") or 1),
        seen=gpus_seen.get(job.queue, ()),
    )
