"""The API refuses an unmigrated store at startup, and /readyz is 503 while the schema is behind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from migrations import downgrade, head_revision, upgrade
from tests.conftest import BACKENDS
from tests.service import (
    REDIS_URL,
    ROOT,
    Service,
    create_postgres_database,
    drop_postgres_database,
    service_env,
)


@pytest.fixture(params=BACKENDS)
def unmigrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    """A deployment whose store was never migrated (a fresh SQLite data dir, a fresh PostgreSQL database); its URL."""
    database = None
    if request.param == "postgres":
        database, url = create_postgres_database()
        env = service_env(tmp_path, url, REDIS_URL)
    else:
        env = service_env(tmp_path, None, None)
        url = f"sqlite:///{tmp_path / 'ganforge.db'}"  # the embedded default (models/settings.py)
    deployment = Service(env=env, data_dir=tmp_path)
    try:
        yield deployment, url
    finally:
        deployment.stop()
        if database:
            drop_postgres_database(database)


def test_an_unmigrated_store_is_refused_at_startup_until_migrate(unmigrated: tuple[Service, str]) -> None:
    service, _url = unmigrated
    command = [sys.executable, "-m", "ganforge", "api", "--port", str(service.port)]
    refused = subprocess.run(command, cwd=ROOT, env=service.env, capture_output=True, text=True, timeout=20)
    assert refused.returncode != 0, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    # one line: where the store is, what this version needs, what to run
    assert len(lines) == 1, refused.stderr
    assert "revision none (never migrated)" in lines[0] and f"needs {head_revision()}" in lines[0], lines
    assert "run `ganforge migrate`" in lines[0], lines
    service.migrate()
    service.start_api()
    with service.client() as client:
        assert client.get("/v1/jobs").status_code == 200


def test_readyz_is_503_while_the_schema_is_behind(unmigrated: tuple[Service, str]) -> None:
    service, url = unmigrated
    service.migrate()
    service.start_api()
    downgrade(url, "0001")  # behind the running API
    behind = httpx.get(f"{service.url}/readyz", timeout=10)
    assert behind.status_code == 503, behind.text
    reason = behind.json()["checks"]["schema"]
    assert "revision 0001" in reason and f"needs {head_revision()}" in reason and "ganforge migrate" in reason
    upgrade(url)
    ready = httpx.get(f"{service.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"]["schema"] == "ok", ready.text
