"""What a job's integrations (today: its MLflow mirror, worker/mlflow_mirror.py) record in the job's event log.

An `integration` event's data names its integration ({"integration": "mlflow", ...}): where the job is mirrored
(the run), and trouble reaching it. Not fenced by the lease: the mirror may report after the job has ended (what it
could not send), and an informational event from a worker that lost the job misleads no one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from models.records import Job, JobEvent
from models.store.base import StoreBase, append_event

INTEGRATION = "integration"


class IntegrationsStore(StoreBase):
    """Integration events: write one, read a job's."""

    def add_integration_event(self, *, job_id: str, data: dict[str, Any]) -> int | None:
        """Append an `integration` event with `data` (JSON-able; it should carry "integration": its name) to the
        job's log; returns its seq, or None when the job is gone."""
        with self.session() as session, session.begin():
            if session.scalar(select(Job.id).where(Job.id == job_id)) is None:
                return None
            return append_event(session, job_id, INTEGRATION, dict(data))

    def integration_events(self, *, job_id: str, integration: str) -> list[dict[str, Any]]:
        """The data of the job's `integration` events for `integration` (e.g. "mlflow"), oldest first."""
        with self.session() as session:
            rows = session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == INTEGRATION).order_by(JobEvent.seq)
            )
            return [dict(row.data) for row in rows if (row.data or {}).get("integration") == integration]
