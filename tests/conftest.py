"""Fixtures: a real ganforge deployment per backend.

`postgres` runs against this machine's PostgreSQL and Redis (a test that cannot
reach them fails); `embedded` against SQLite and the file-system broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from migrations import upgrade
from models.db import make_engine
from models.store import JobStore
from tests.service import REDIS_URL, Service, create_postgres_database, drop_postgres_database, service_env

BACKENDS = ["postgres", "embedded"]


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001 - pytest's hook signature
    # Two test processes share two cores: torch's default of one thread per core made in-process training
    # 5-30x slower while the other process ran (measured on tiny nets). The services' processes get
    # OMP_NUM_THREADS=1 from tests/service.py.
    import torch

    torch.set_num_threads(1)


def _deploy(backend: str, data_dir: Path, **extra: str) -> tuple[Service, str | None]:
    database = None
    if backend == "postgres":
        database, url = create_postgres_database()
        env = service_env(data_dir, url, REDIS_URL, **extra)
    else:
        env = service_env(data_dir, None, None, **extra)
    service = Service(env=env, data_dir=data_dir)
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
        deployment.stop()
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
        deployment.stop()
        if database:
            drop_postgres_database(database)


@pytest.fixture(scope="module", params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """API + one worker, shared by the tests of a module."""
    with api_and_worker(request.param, tmp_path_factory.mktemp(f"ganforge-{request.param}")) as deployment:
        yield deployment


@pytest.fixture(params=BACKENDS)
def bare_service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """A migrated deployment with nothing started: the test starts and kills processes itself."""
    deployment, database = _deploy(request.param, tmp_path)
    try:
        yield deployment
    finally:
        deployment.stop()
        if database:
            drop_postgres_database(database)


@pytest.fixture(params=["postgres", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A migrated, empty job store on PostgreSQL and on SQLite."""
    database = None
    if request.param == "postgres":
        database, url = create_postgres_database()
    else:
        url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        yield JobStore(engine)
    finally:
        engine.dispose()
        if database:
            drop_postgres_database(database)
