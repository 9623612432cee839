"""Generate requests (POST /v1/jobs/{id}/generate): queued by the API, run by a generate worker.

queued → running (the worker's conditional claim, so a duplicate message is a no-op) → succeeded (result_key,
media_type) or failed (error); succeeded → expired when its result is deleted (`expire_generation_results`: older
than the result TTL, or past the owner's cap on kept results, oldest first). The API's reconciler fails a request no
worker took or finished in time (`expire_generations`) and expires old results; the generate worker applies the
owner's cap as soon as it stores a result. `create_generation` refuses an owner already at their cap of queued and
running requests (TooManyGenerations).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update

from models.records import Checkpoint, Generation, GenerationStatus, Job
from models.store.base import StoreBase, serialise, utcnow
from models.store.bounds import storable

if TYPE_CHECKING:
    from models.artifacts import ArtifactStore
    from models.settings import Settings

log = logging.getLogger(__name__)

ACTIVE = (GenerationStatus.QUEUED, GenerationStatus.RUNNING)


class GenerationSourceGone(Exception):
    """The job, or its checkpoint at the request's step, was deleted while the request was being made."""

    def __init__(self, step: int | None) -> None:
        super().__init__("the job was deleted" if step is None else f"no checkpoint at step {step} any more")
        self.step = step


class TooManyGenerations(Exception):
    """The owner already has `active` requests queued or running: at their cap."""

    def __init__(self, active: int) -> None:
        super().__init__(f"{active} generate requests queued or running")
        self.active = active


class GenerationsStore(StoreBase):
    """Create, read, claim and end generate requests."""

    def create_generation(
        self,
        *,
        job_id: str,
        owner: str,
        params: dict[str, Any],
        max_active: int | None = None,
        key_id: str | None = None,
    ) -> Generation:
        """A new queued request for `owner`'s job `job_id` (the caller checked the job is theirs); raises
        TooManyGenerations when `owner` already has `max_active` (when given) queued or running; GenerationSourceGone
        when the job, or its checkpoint at params["step"], is no longer there (deleted meanwhile). `key_id`: the
        asking key's id (a store key's prefix, "env:<owner>", None with auth off)."""
        generation = Generation(
            id=str(uuid.uuid4()),
            job_id=job_id,
            owner=owner,
            params=params,
            status=GenerationStatus.QUEUED,
            created_at=utcnow(),
            key_id=key_id,
        )
        with self.session() as session, session.begin():
            # The job row, share-locked: a delete of the job or of a checkpoint (both lock it for update) either
            # committed first, and the checks below see what it removed, or waits for this request and then sees
            # it pending (a checkpoint a pending request reads is not deleted). SQLite's writers are serial anyway.
            if session.scalar(select(Job.id).where(Job.id == job_id).with_for_update(read=True)) is None:
                raise GenerationSourceGone(None)
            step = params.get("step")
            if isinstance(step, int) and session.get(Checkpoint, (job_id, step)) is None:
                raise GenerationSourceGone(step)
            if max_active is not None:
                # Count and insert under one per-owner lock, so two concurrent requests cannot both pass the count
                # (SQLite's BEGIN IMMEDIATE already serialises writers; PostgreSQL takes a transaction-scoped lock).
                serialise(session, f"gen:{owner}")
                active = session.scalar(
                    select(func.count())
                    .select_from(Generation)
                    .where(Generation.owner == owner, Generation.status.in_(ACTIVE))
                )
                if active is not None and active >= max_active:
                    raise TooManyGenerations(active)
            session.add(generation)
        return generation

    def get_generation(self, *, generation_id: str, owner: str | None = None) -> Generation | None:
        """The request; None when there is none, or it is not `owner`'s (when given)."""
        if not storable(generation_id):
            return None
        query = select(Generation).where(Generation.id == generation_id)
        if owner is not None:
            query = query.where(Generation.owner == owner)
        with self.session() as session:
            return session.scalars(query).one_or_none()

    def claim_generation(self, *, generation_id: str) -> Generation | None:
        """queued → running with a conditional UPDATE; None when it is not queued (taken, ended or unknown)."""
        with self.session() as session, session.begin():
            claimed = session.execute(
                update(Generation)
                .where(Generation.id == generation_id, Generation.status == GenerationStatus.QUEUED)
                .values(status=GenerationStatus.RUNNING, started_at=utcnow())
                .returning(Generation.seq)
            ).scalar_one_or_none()
            if claimed is None:
                return None
            return session.scalars(select(Generation).where(Generation.id == generation_id)).one()

    def finish_generation(self, *, generation_id: str, result_key: str, media_type: str) -> bool:
        """running → succeeded with its result; False when it was no longer running (the reconciler failed it)."""
        return self._end(
            generation_id,
            (GenerationStatus.RUNNING,),
            status=GenerationStatus.SUCCEEDED,
            result_key=result_key,
            media_type=media_type,
        )

    def fail_generation(self, *, generation_id: str, error: str) -> bool:
        """queued or running → failed with `error` (a reason for the user); False when it had already ended."""
        return self._end(
            generation_id,
            (GenerationStatus.QUEUED, GenerationStatus.RUNNING),
            status=GenerationStatus.FAILED,
            error=error,
        )

    def _end(self, generation_id: str, from_statuses: tuple[str, ...], **values: Any) -> bool:
        with self.session() as session, session.begin():
            ended = session.execute(
                update(Generation)
                .where(Generation.id == generation_id, Generation.status.in_(from_statuses))
                .values(finished_at=utcnow(), **values)
                .returning(Generation.seq)
            ).scalar_one_or_none()
        return ended is not None

    def expire_generations(self, *, queued_for: timedelta, running_for: timedelta) -> list[str]:
        """Fail the requests queued longer than `queued_for` (no generate worker took the message) or running
        longer than `running_for` (their worker died); returns their ids."""
        now = utcnow()
        with self.session() as session, session.begin():
            stale = list(
                session.execute(
                    select(Generation.id, Generation.status).where(
                        or_(
                            (Generation.status == GenerationStatus.QUEUED) & (Generation.created_at < now - queued_for),
                            (Generation.status == GenerationStatus.RUNNING)
                            & (Generation.started_at < now - running_for),
                        )
                    )
                )
            )
        expired = []
        for generation_id, status in stale:
            if status == GenerationStatus.QUEUED:
                why = (
                    f"no generate worker took this request within {queued_for.total_seconds():.0f} s "
                    "(is `ganforge worker --generate` running?); send it again"
                )
            else:
                why = (
                    f"the generate worker did not finish within {running_for.total_seconds():.0f} s (it may have died)"
                )
            if self._end(generation_id, (status,), status=GenerationStatus.FAILED, error=why):
                expired.append(generation_id)
        return expired

    def expire_generation_results(
        self, *, older_than: timedelta, keep_per_owner: int, owner: str | None = None, room: int = 0
    ) -> list[str]:
        """succeeded → expired for the requests that finished longer than `older_than` ago, and for each owner's
        (only `owner`'s, when given) beyond their newest `keep_per_owner` results (less `room`, for results about to be
        recorded); returns the result keys for the
        caller to delete from the artifact store (the rows no longer point at them, so a GET says 410, not 404). An
        expired row's params are cleared ({}): they can be ~1 MiB (codes) and nothing reads them once the result is
        gone."""
        now = utcnow()
        newest_first = (
            func.row_number()
            .over(partition_by=Generation.owner, order_by=(Generation.finished_at.desc(), Generation.seq.desc()))
            .label("rank")
        )
        kept = select(Generation.seq, Generation.result_key, Generation.finished_at, newest_first).where(
            Generation.status == GenerationStatus.SUCCEEDED
        )
        if owner is not None:
            kept = kept.where(Generation.owner == owner)
        ranked = kept.subquery()
        cutoff = now - older_than
        doomed = select(ranked.c.seq, ranked.c.result_key, ranked.c.finished_at < cutoff).where(
            or_(ranked.c.finished_at < cutoff, ranked.c.rank > keep_per_owner - room)
        )
        again = "send the request again (the same seed gives the same samples)"
        reasons = {
            True: f"its result was deleted {older_than.total_seconds():g} s after it was made "
            f"(GANFORGE_GENERATE_RESULT_TTL_SECONDS); {again}",
            False: f"its result was deleted: at most {keep_per_owner} results are kept per owner, the oldest deleted "
            f"first (GANFORGE_GENERATE_MAX_RESULTS_PER_OWNER); {again}",
        }
        keys: list[str] = []
        with self.session() as session, session.begin():
            rows = session.execute(doomed).all()
            for aged in (True, False):
                chosen = {seq: key for seq, key, old in rows if bool(old) is aged}
                if not chosen:
                    continue
                expired = session.scalars(
                    update(Generation)
                    .where(Generation.seq.in_(list(chosen)), Generation.status == GenerationStatus.SUCCEEDED)
                    .values(status=GenerationStatus.EXPIRED, result_key=None, error=reasons[aged], params={})
                    .returning(Generation.seq)
                    .execution_options(synchronize_session=False)
                ).all()
                keys += [key for seq in expired if (key := chosen[seq]) is not None]
        return keys


def delete_generation_results(
    store: GenerationsStore,
    artifacts: ArtifactStore,
    settings: Settings,
    owner: str | None = None,
    *,
    make_room: bool = False,
) -> list[str]:
    """Expire the generate results past their TTL or their owner's cap (only `owner`'s, when given) and delete
    their files; returns the keys deleted. The rows are marked first, so no GET is ever pointed at a missing file;
    a file that fails to delete is logged (the row already says expired). Run by the API's reconciler (every
    owner) and by the generate worker before it records a result (that owner, `make_room`: one fewer kept, so the
    owner holds at most the cap from the moment the new result is visible)."""
    keys = store.expire_generation_results(
        older_than=timedelta(seconds=settings.generate_result_ttl_seconds),
        keep_per_owner=settings.generate_max_results_per_owner,
        room=1 if make_room else 0,
        owner=owner,
    )
    for key in keys:
        try:
            artifacts.delete(key)
        except Exception:
            log.warning("could not delete expired generate result %s", key, exc_info=True)
    if keys:
        log.info("deleted %d expired generate result(s)", len(keys))
    return keys
