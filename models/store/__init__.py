"""The job store: every SQL statement of ganforge lives in this package.

One module per idea, composed into `JobStore`:

- `jobs`: submission (idempotent create), get, list, cancel, enqueue marks, counts
- `lease`: the worker's lease (claim, heartbeat, progress, finish, hand back, forgive an attempt) and the
  reconciler's queries
- `results`: events, metrics, samples, checkpoints
- `datasets`: uploaded data set records
- `alerts`: what training.watch found on a job, and its CPU/GPU seconds
- `integrations`: integration events (where a job is mirrored in MLflow, trouble reaching it)
- `studies`: studies (one request fanned out into jobs) and the runs their comparison reads
- `keys`: API keys (owner, scopes, expiry, revocation, last use; only each key's SHA-256 is stored)
- `quota`: what an owner holds and uses as its quotas count it, and the submission check
- `workers`: the live training workers and the named queues each serves
- `webhooks`: webhook endpoints and the delivery outbox's sender side (`outbox` writes its rows with the events)
- `paging`: the one keyset-paging helper; `bounds`: client integers kept within BIGINT

Methods take keyword-only arguments; each call is one short transaction (no
transaction stays open while a job trains).
"""

from __future__ import annotations

from models.store.alerts import AlertsStore
from models.store.base import as_utc, utcnow
from models.store.datasets import DatasetsStore
from models.store.errors import DatasetGone, DatasetInUse, IdempotencyConflict, InvalidCursor
from models.store.generations import GenerationsStore
from models.store.integrations import IntegrationsStore
from models.store.jobs import JobsStore
from models.store.keys import KeysStore
from models.store.lease import LeaseStore
from models.store.quota import QuotaStore
from models.store.results import MetricPoint, ResultsStore
from models.store.studies import StudiesStore
from models.store.webhooks import WebhooksStore
from models.store.workers import WorkersStore


class JobStore(
    StudiesStore,
    JobsStore,
    LeaseStore,
    ResultsStore,
    DatasetsStore,
    GenerationsStore,
    AlertsStore,
    IntegrationsStore,
    KeysStore,
    QuotaStore,
    WebhooksStore,
    WorkersStore,
):
    """All reads and writes of jobs, leases, events, metrics, samples, checkpoints, data sets and API keys."""


__all__ = [
    "DatasetGone",
    "DatasetInUse",
    "IdempotencyConflict",
    "InvalidCursor",
    "JobStore",
    "MetricPoint",
    "as_utc",
    "utcnow",
]
