"""The registry of live training workers: which named queues each serves, how many GPUs it sees, and when it was
last seen.

Each training worker's pool process upserts its row every GANFORGE_WORKER_HEARTBEAT_SECONDS (worker/tasks.py);
a row unseen for longer than the caller's `within` (the API uses twice the heartbeat) is a worker that is gone,
killed or cut off. The scheduler does not read it (a worker claims only from the queues it serves); the API
does, to say why a job waits (LeaseStore.queue_reason): no live worker serves its queue, or none that does could
run it (`runs_on`: the rule the worker itself follows, worker/trainer.py resolve_device and worker/ddp.py launch).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import timedelta

from sqlalchemy import delete, select, update

from models.records import Worker
from models.store.base import StoreBase, utcnow


class WorkersStore(StoreBase):
    """Workers say they are alive and what they serve; the API asks which queues have a live worker."""

    def register_worker(
        self, *, worker: str, queues: Sequence[str], threads: int | None = None, gpus: int | None = None
    ) -> None:
        """Insert or refresh `worker`'s row: the queues it serves (names, in its order), its torch threads, the GPUs
        it sees (0 on CPU; None: not said), now as last_seen. Idempotent; one short transaction."""
        now = utcnow()
        with self.session() as session, session.begin():
            seen = session.execute(
                update(Worker)
                .where(Worker.id == worker)
                .values(queues=list(queues), threads=threads, gpus=gpus, last_seen=now)
                .returning(Worker.id)
            ).scalar_one_or_none()
            if seen is None:
                session.add(
                    Worker(id=worker, queues=list(queues), threads=threads, gpus=gpus, started_at=now, last_seen=now)
                )

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

    def gpus_by_queue(self, *, within: timedelta) -> dict[str, list[int | None]]:
        """{named queue: the GPU counts its workers seen within `within` see, one per worker (None: a worker that
        did not say)} for every queue a live worker serves; its keys are served_queues'."""
        seen: dict[str, list[int | None]] = {}
        for worker in self.live_workers(within=within):
            for queue in worker.queues:
                seen.setdefault(str(queue), []).append(worker.gpus)
        return seen

    def forget_silent_workers(self, *, older_than: timedelta) -> int:
        """Delete the rows of workers unseen for `older_than` (a killed worker never removes its own); how many."""
        with self.session() as session, session.begin():
            gone = session.execute(
                delete(Worker).where(Worker.last_seen < utcnow() - older_than).returning(Worker.id)
            ).all()
            return len(gone)


def runs_on(*, device: str, gpus: int, seen: int | None) -> bool:
    """Whether a worker that sees `seen` GPUs runs a job whose training.device is `device` ("auto", "cpu", "cuda")
    and whose resources.gpus is `gpus`, rather than failing it, as the worker decides (worker/trainer.py
    resolve_device, worker/ddp.py launch): on the CPU ("cpu", or "auto" on a worker without a GPU) any `gpus` runs
    as that many gloo processes; on GPUs ("cuda", or "auto" on a worker with one) it needs `gpus` of them. A worker
    that did not say (`seen` None) is taken to run it: a reason must never claim a shortfall it cannot see."""
    if seen is None or device == "cpu" or (device == "auto" and seen == 0):
        return True
    return seen >= gpus


def gpu_shortage(*, queue: str, device: str, gpus: int, seen: Collection[int | None]) -> str | None:
    """Why no live worker of `queue` (whose GPU counts are `seen`, one per worker) can run a job of `device` and
    `gpus` (runs_on); None when one can, or when none is live (that is the no-worker reason's to say).

    E.g. "no live worker of queue 'gpu' sees 4 GPUs (the most is 1): the job waits for one that does; start a
    worker of this queue on a machine with 4 (`ganforge worker --queue gpu --gpu 0,1,2,3`) or ask for fewer
    (resources.gpus)"."""
    if not seen or any(runs_on(device=device, gpus=gpus, seen=count) for count in seen):
        return None
    most = max(count for count in seen if count is not None)  # runs_on took every None
    wanted = "a GPU" if gpus == 1 else f"{gpus} GPUs"
    fewer = " or ask for fewer (resources.gpus)" if gpus > 1 else ""
    indices = ",".join(str(index) for index in range(gpus))
    return (
        f"no live worker of queue '{queue}' sees {wanted} (the most is {most}): the job waits for one that does; "
        f"start a worker of this queue on a machine with {gpus} (`ganforge worker --queue {queue} --gpu {indices}`)"
        f"{fewer}"
    )
