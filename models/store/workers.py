"""The registry of live training workers: which named queues each serves, and when it was last seen.

Each training worker's pool process upserts its row every GANFORGE_WORKER_HEARTBEAT_SECONDS (worker/tasks.py);
a row unseen for longer than the caller's `within` (the API uses twice the heartbeat) is a worker that is gone,
killed or cut off. The scheduler does not read it (a worker claims only from the queues it serves); the API
does, to say why a job waits (LeaseStore.queue_reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, select, update

from models.records import Worker
from models.store.base import StoreBase, utcnow


class WorkersStore(StoreBase):
    """Workers say they are alive and what they serve; the API asks which queues have a live worker."""

    def register_worker(self, *, worker: str, queues: Sequence[str], threads: int | None = None) -> None:
        """Insert or refresh `worker`'s row: the queues it serves (names, in its order), its torch threads, now as
        last_seen. Idempotent; one short transaction."""
        now = utcnow()
        with self.session() as session, session.begin():
            seen = session.execute(
                update(Worker)
                .where(Worker.id == worker)
                .values(queues=list(queues), threads=threads, last_seen=now)
                .returning(Worker.id)
            ).scalar_one_or_none()
            if seen is None:
                session.add(Worker(id=worker, queues=list(queues), threads=threads, started_at=now, last_seen=now))

    def forget_worker(self, *, worker: str) -> None:
        """Remove `worker`'s row (a worker stopping on request); a killed one expires instead."""
        with self.session() as session, session.begin():
            session.execute(delete(Worker).where(Worker.id == worker))

    def live_workers(self, *, within: timedelta) -> list[Worker]:
        """Workers seen within `within` of now, oldest first."""
        with self.session() as session:
            return list(
                session.scalars(
                    select(Worker).where(Worker.last_seen >= utcnow() - within).order_by(Worker.started_at)
                ).all()
            )

    def served_queues(self, *, within: timedelta) -> set[str]:
        """The named queues that at least one worker seen within `within` serves."""
        return {str(queue) for worker in self.live_workers(within=within) for queue in worker.queues}

    def forget_silent_workers(self, *, older_than: timedelta) -> int:
        """Delete the rows of workers unseen for `older_than` (a killed worker never removes its own); how many."""
        with self.session() as session, session.begin():
            gone = session.execute(
                delete(Worker).where(Worker.last_seen < utcnow() - older_than).returning(Worker.id)
            ).all()
            return len(gone)
