"""Generate requests (POST /v1/jobs/{id}/generate): queued by the API, run by a generate worker.

queued → running (the worker's conditional claim, so a duplicate message is a no-op) → succeeded (result_key,
media_type) or failed (error). The API's reconciler fails a request no worker took or finished in time
(`expire_generations`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update

from models.records import Generation, GenerationStatus
from models.store.base import StoreBase, utcnow
from models.store.bounds import storable


class GenerationsStore(StoreBase):
    """Create, read, claim and end generate requests."""

    def create_generation(self, *, job_id: str, owner: str, params: dict[str, Any]) -> Generation:
        """A new queued request for `owner`'s job `job_id` (the caller checked the job is theirs)."""
        generation = Generation(
            id=str(uuid.uuid4()),
            job_id=job_id,
            owner=owner,
            params=params,
            status=GenerationStatus.QUEUED,
            created_at=utcnow(),
        )
        with self.session() as session, session.begin():
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
