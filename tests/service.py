"""Real processes for tests: a uvicorn API and Celery workers against a real store and broker."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
KEYS = {"key-a": "team-a", "key-b": "team-b"}
# A job spec that trains in a moment (5 steps of a 16-unit MLP): for tests about the API, not the training.
TINY_SPEC: dict[str, Any] = {
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 16, "depth": 1},
    "loss": {"name": "nsgan"},
    "training": {"steps": 5, "batch_size": 8},
    "every": {"metrics": 1, "samples": 5, "checkpoint": 5},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_url(name: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def create_postgres_database(*, migrated: bool = False) -> tuple[str, str]:
    """A fresh PostgreSQL database, empty or (`migrated`) at the latest schema; fails loudly when PostgreSQL does
    not answer. A migrated one is a copy of this process's migrated template (CREATE DATABASE ... TEMPLATE takes
    ~0.05 s where running the migrations took 0.3-1 s a database)."""
    name = f"ganforge_test_{uuid.uuid4().hex[:10]}"
    template = f' TEMPLATE "{_postgres_template()}"' if migrated else ""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"{template}')
    return name, _postgres_url(name)


# This process's migrated stores to copy: made on first use, dropped when the process ends. One per test process,
# so no two processes migrate or copy one template at once (a template cannot be copied while it is connected to).
_TEMPLATES: dict[str, str] = {}


def _postgres_template() -> str:
    if "postgres" not in _TEMPLATES:
        from migrations import upgrade

        name, url = create_postgres_database()
        atexit.register(drop_postgres_database, name)
        upgrade(url)  # its engine is disposed: nothing stays connected to the template
        _TEMPLATES["postgres"] = name
    return _TEMPLATES["postgres"]


def migrated_sqlite(path: Path) -> str:
    """Write an SQLite store at the latest schema to `path` (a copy of this process's migrated template); its URL."""
    if "sqlite" not in _TEMPLATES:
        import tempfile

        from migrations import upgrade

        folder = Path(tempfile.mkdtemp(prefix="ganforge-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        upgrade(f"sqlite:///{folder / 'template.db'}")
        _TEMPLATES["sqlite"] = str(folder / "template.db")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600)  # as private as `ganforge migrate` makes the store
    source, target = sqlite3.connect(_TEMPLATES["sqlite"]), sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return f"sqlite:///{path}"


def drop_postgres_database(name: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Service:
    """One ganforge deployment under test: settings env, an API process, worker processes."""

    env: dict[str, str]
    data_dir: Path
    port: int = field(default_factory=free_port)
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str = "key-a") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.data_dir / log_name, "ab")  # noqa: SIM115 - the process owns it
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "ganforge", "migrate"], cwd=ROOT, env=self.env, check=True, capture_output=True
        )

    def start_api(self) -> None:
        self.api = self._spawn([sys.executable, "-m", "ganforge", "api", "--port", str(self.port)], "api.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.api.poll() is None, (self.data_dir / "api.log").read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("the API did not become ready:\n" + (self.data_dir / "api.log").read_text())

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        """A worker process; `env` overrides settings for it alone (e.g. its own route to the store)."""
        log_name = f"worker-{len(self.workers)}.log"
        worker = self._spawn([sys.executable, "-m", "ganforge", "worker"], log_name, env)
        self.workers.append(worker)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert worker.poll() is None, (self.data_dir / log_name).read_text()
            if b" ready." in (self.data_dir / log_name).read_bytes():
                return worker
            time.sleep(0.05)
        raise AssertionError("the worker did not start:\n" + (self.data_dir / log_name).read_text())

    def start_generate_worker(self, *, wait: bool = True, **env: str) -> subprocess.Popen[bytes]:
        """A generate worker (`ganforge worker --generate`: generate requests only); `env` as for start_worker.

        wait=False returns at once (start other processes meanwhile), then `wait_generate_worker` waits for it."""
        log_name = f"generate-worker-{len(self.workers)}.log"
        worker = self._spawn([sys.executable, "-m", "ganforge", "worker", "--generate"], log_name, env)
        self.workers.append(worker)
        return self.wait_generate_worker(worker) if wait else worker

    def wait_generate_worker(self, worker: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """Wait until the generate worker `worker` (of start_generate_worker) consumes its queue."""
        log_name = f"generate-worker-{self.workers.index(worker)}.log"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert worker.poll() is None, (self.data_dir / log_name).read_text()
            if b" ready." in (self.data_dir / log_name).read_bytes():
                return worker
            time.sleep(0.05)
        raise AssertionError("the generate worker did not start:\n" + (self.data_dir / log_name).read_text())

    def kill_worker(self, worker: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Kill the worker's whole process group (main process and pool children)."""
        os.killpg(worker.pid, sig)
        worker.wait(timeout=60)

    def stop(self) -> None:
        for process in [*self.workers, self.api]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.api]:
            if process is None:
                continue
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def close(self) -> None:
        """SIGKILL every process group at once: a deployment thrown away needs no graceful stop (Celery's took 1-6 s,
        waiting out its broker poll and its pool). Tests of the graceful stop call `stop`."""
        for process in [*self.workers, self.api]:
            if process is not None and process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for process in [*self.workers, self.api]:
            if process is not None:
                process.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.data_dir.glob("*.log")))


def service_env(data_dir: Path, database_url: str | None, broker_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANFORGE_")}
    env.update(
        GANFORGE_DATA_DIR=str(data_dir),
        GANFORGE_API_KEYS=",".join(f"{k}={v}" for k, v in KEYS.items()),
        GANFORGE_QUEUE=f"ganforge-test-{uuid.uuid4().hex[:8]}",
        GANFORGE_RECONCILE_SECONDS="1",
        GANFORGE_REDELIVER_SECONDS="5",
        GANFORGE_LEASE_TIMEOUT_SECONDS="10",
        GANFORGE_HEARTBEAT_SECONDS="1",
        GANFORGE_METRICS_FLUSH_SECONDS="0.5",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        # Rate limits out of the way of tests about other things (a module's tests share a key and 127.0.0.1);
        # tests/test_rate_limits.py passes its own.
        GANFORGE_RATE_SUBMIT="100000/minute",
        GANFORGE_RATE_UPLOAD="100000/minute",
        GANFORGE_RATE_UNAUTHENTICATED="100000/minute",
    )
    if database_url:
        env["GANFORGE_DATABASE_URL"] = database_url
    if broker_url:
        env["GANFORGE_BROKER_URL"] = broker_url
    env.update(extra)
    return env


def wait_for(client: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float = 120.0) -> dict[str, Any]:
    """Poll the job until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, f"GET job {job_id}: {response.status_code} {response.text}"
        job = response.json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout} s: {job}")
