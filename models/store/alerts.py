"""What training.watch found on a job (worker/watch.py), and the CPU/GPU seconds its attempts spent.

Both are worker writes, fenced like the others (models/store/lease.py): they land only while the
writer holds the job's lease with the token its claim returned.
"""

from __future__ import annotations

import math
from typing import Any

from models.store.base import StoreBase, append_event, utcnow
from models.store.lease import _locked_lease

ALERTS_PER_JOB_MAX = 16  # one per kind today; a bound on what a job row can hold whatever a worker sends


class AlertsStore(StoreBase):
    """The worker's alert and compute-time writes."""

    def add_alert(self, *, job_id: str, worker: str, token: int, alert: dict[str, Any]) -> bool:
        """Append `alert` ({kind, step, evidence, action}) to the job's alerts and log an `alert` event with it.

        One alert per kind per job: a second of the same kind (a resumed attempt that fires again
        what its predecessor recorded after its last checkpoint) is dropped. Returns True when it was
        added; False when it was a repeat, or this worker no longer holds the job.
        """
        with self.session() as session, session.begin():
            job = _locked_lease(session, job_id, worker, token)
            if job is None:
                return False
            alerts = list(job.alerts or [])
            if any(a.get("kind") == alert.get("kind") for a in alerts) or len(alerts) >= ALERTS_PER_JOB_MAX:
                return False
            job.alerts = [*alerts, alert]  # a new list: the JSON column sees the change
            job.updated_at = utcnow()
            append_event(session, job_id, "alert", dict(alert))
            return True

    def add_compute_seconds(self, *, job_id: str, worker: str, token: int, cpu: float, gpu: float) -> bool:
        """Add one attempt's process CPU seconds and GPU wall seconds (s, ≥ 0) to the job's totals.

        A GPU total stays None for a job that never trained on one. False when this worker no longer holds the job.
        Raises ValueError for a negative or non-finite number.
        """
        if not (math.isfinite(cpu) and math.isfinite(gpu) and cpu >= 0 and gpu >= 0):
            raise ValueError(f"compute seconds must be finite and >= 0, not cpu={cpu} gpu={gpu}")
        with self.session() as session, session.begin():
            job = _locked_lease(session, job_id, worker, token)
            if job is None:
                return False
            job.cpu_seconds = (job.cpu_seconds or 0.0) + cpu
            if gpu > 0 or job.gpu_seconds is not None:
                job.gpu_seconds = (job.gpu_seconds or 0.0) + gpu
            return True
