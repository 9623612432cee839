"""Fixtures: a real ganforge deployment per backend.

`postgres` runs against this machine's PostgreSQL and Redis (a test that cannot
reach them fails); `embedded` against SQLite and the file-system broker.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import psycopg
import pytest

from models.db import make_engine
from models.records import JobStatus
from models.store import JobStore
from tests.service import (
    KEYS,
    REDIS_URL,
    Service,
    create_postgres_database,
    drop_postgres_database,
    migrated_sqlite,
    service_env,
)

BACKENDS = ["postgres", "embedded"]


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001 - pytest's hook signature
    # Two test processes share two cores: torch's default of one thread per core made in-process training
    # 5-30x slower while the other process ran (measured on tiny nets). The services' processes get
    # OMP_NUM_THREADS=1 from tests/service.py.
    import torch

    torch.set_num_threads(1)


def _deploy(backend: str, data_dir: Path, **extra: str) -> tuple[Service, str | None]:
    # The store is a copy of a migrated template (tests/service.py), unless the test names its own data dir for
    # ganforge to create: then `ganforge migrate` makes the dir and the store, as in production.
    own_data_dir = "GANFORGE_DATA_DIR" in extra
    database = None
    if backend == "postgres":
        database, url = create_postgres_database(migrated=not own_data_dir)
        env = service_env(data_dir, url, REDIS_URL, **extra)
    else:
        env = service_env(data_dir, None, None, **extra)
        if not own_data_dir:
            migrated_sqlite(data_dir / "ganforge.db")  # the embedded default's store (models/settings.py)
    service = Service(env=env, data_dir=data_dir)
    if own_data_dir:
        service.migrate()
    return service, database


@contextmanager
def api_only(backend: str, data_dir: Path, **extra: str) -> Iterator[Service]:
    """A migrated deployment with its API started and no worker, with extra GANFORGE_* settings."""
    deployment, database = _deploy(backend, data_dir, **extra)
    try:
        deployment.start_api()
        yield deployment
    finally:
        deployment.close()
        if database:
            drop_postgres_database(database)


@contextmanager
def api_and_worker(backend: str, data_dir: Path, **extra: str) -> Iterator[Service]:
    """A migrated deployment with its API and one worker started."""
    deployment, database = _deploy(backend, data_dir, **extra)
    try:
        deployment.start_api()
        deployment.start_worker()
        yield deployment
    finally:
        deployment.close()
        if database:
            drop_postgres_database(database)


# The shared deployments' settings beyond service_env's. The hourly upload quota counts every upload the store has
# seen, so with the default one module's uploads would be counted against the next module's; the quota tests
# start deployments of their own with the quotas they test.
SHARED_SETTINGS = {"GANFORGE_QUOTA_UPLOADS_PER_HOUR": "1000000", "GANFORGE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}


class SharedDeployments:
    """One API + one worker per backend, kept across the modules one test process runs (pytest-xdist's
    `--dist loadfile` gives each process whole modules): starting them cost 5-25 s a backend and module on a
    loaded 2-core machine. A module that leaves a job unfinished, or a process dead, hands the next module a fresh
    deployment instead, so a module never waits behind another's work."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._open: dict[str, tuple[ExitStack, Service]] = {}

    def get(self, backend: str) -> Service:
        if backend not in self._open:
            stack = ExitStack()
            folder = self._tmp.mktemp(f"ganforge-{backend}")
            deployment = stack.enter_context(api_and_worker(backend, folder, **SHARED_SETTINGS))
            self._open[backend] = (stack, deployment)
        return self._open[backend][1]

    def release(self, backend: str) -> None:
        """The module is done with `backend`'s deployment: keep it for the next module once its unfinished jobs are
        cancelled; close it when that fails or a process died (the next module gets a fresh one)."""
        stack, deployment = self._open[backend]
        alive = all(p is not None and p.poll() is None for p in [deployment.api, *deployment.workers])
        if not (alive and len(deployment.workers) == 1 and _cancel_unfinished_jobs(deployment)):
            del self._open[backend]
            stack.close()

    def close(self) -> None:
        for stack, _deployment in self._open.values():
            stack.close()
        self._open.clear()


def _unfinished_jobs(deployment: Service) -> list[tuple[str, str]]:
    """(id, owner) of the deployment's jobs that are not final, read from its store."""
    finals = ", ".join(f"'{status}'" for status in JobStatus.FINAL)
    query = f"SELECT id, owner FROM jobs WHERE status NOT IN ({finals})"
    url = deployment.env.get("GANFORGE_DATABASE_URL")
    if url:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as connection:
            return [(str(i), str(o)) for i, o in connection.execute(query).fetchall()]
    with closing(sqlite3.connect(deployment.data_dir / "ganforge.db", timeout=30)) as connection:
        return [(str(i), str(o)) for i, o in connection.execute(query).fetchall()]


def _cancel_unfinished_jobs(deployment: Service, timeout: float = 30.0) -> bool:
    """Cancel every job the module left unfinished, through the API as its owner; whether they all ended in time."""
    key_of = {owner: key for key, owner in KEYS.items()}
    deadline = time.monotonic() + timeout
    asked: set[str] = set()
    while unfinished := _unfinished_jobs(deployment):
        if time.monotonic() > deadline or any(owner not in key_of for _job, owner in unfinished):
            return False
        for job_id, owner in unfinished:
            if job_id not in asked:
                with deployment.client(key_of[owner]) as client:
                    client.post(f"/v1/jobs/{job_id}/cancel")  # 409 when it ended meanwhile
                asked.add(job_id)
        time.sleep(0.2)
    return True


@pytest.fixture(scope="session")
def shared_deployments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedDeployments]:
    deployments = SharedDeployments(tmp_path_factory)
    yield deployments
    deployments.close()


@pytest.fixture(scope="module", params=BACKENDS)
def service(request: pytest.FixtureRequest, shared_deployments: SharedDeployments) -> Iterator[Service]:
    """API + one worker with service_env's settings (and SHARED_SETTINGS), shared by the tests of a module and by the
    next module this test process runs when this one leaves it idle (SharedDeployments)."""
    yield shared_deployments.get(request.param)
    shared_deployments.release(request.param)


@pytest.fixture(params=BACKENDS)
def bare_service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """A migrated deployment with nothing started: the test starts and kills processes itself."""
    deployment, database = _deploy(request.param, tmp_path)
    try:
        yield deployment
    finally:
        deployment.close()
        if database:
            drop_postgres_database(database)


@pytest.fixture(params=["postgres", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A migrated, empty job store on PostgreSQL and on SQLite."""
    database = None
    if request.param == "postgres":
        database, url = create_postgres_database(migrated=True)
    else:
        url = migrated_sqlite(tmp_path / "store.db")
    engine = make_engine(url)
    try:
        yield JobStore(engine)
    finally:
        engine.dispose()
        if database:
            drop_postgres_database(database)
