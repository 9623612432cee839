"""SQLite: a store read does not wait for the write lock (models/db.py StoreSession); a write still takes it first."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from models.db import make_engine
from models.spec import JobSpec
from models.store import JobStore
from tests.service import TINY_SPEC, migrated_sqlite


def test_sqlite_reads_pass_a_held_write_lock_and_writes_wait_for_it(tmp_path: Path) -> None:
    url = migrated_sqlite(tmp_path / "ganforge.db")
    store = JobStore(make_engine(url))
    try:
        job, _ = store.create_job(owner="team-a", spec=JobSpec.model_validate(TINY_SPEC), idempotency_key=None)
        other = sqlite3.connect(tmp_path / "ganforge.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process (a worker) writing
        try:
            started = time.monotonic()
            found = store.get_job(job_id=job.id, owner="team-a")
            assert found is not None and found.id == job.id
            assert store.has_keys() is False
            # The busy timeout is 30 s: a read that took the write lock (BEGIN IMMEDIATE) would still be waiting.
            assert time.monotonic() - started < 5

            written = threading.Event()

            def cancel() -> None:
                store.request_cancel(job_id=job.id, owner="team-a", key=None)
                written.set()

            writer = threading.Thread(target=cancel, daemon=True)
            writer.start()
            assert not written.wait(0.5), "a write went ahead while another connection held the write lock"
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert written.wait(10)
        cancelled = store.get_job(job_id=job.id)
        assert cancelled is not None and cancelled.status == "cancelled"
    finally:
        store.engine.dispose()
